"""Population throughput: aggregate env steps per second of K members against one old single run.

Three configurations (issue 21), each trained with the CW update ratio (``update_every`` 50,
one update per step), timed after a warm-up past the random phase:

- ``small``: the memory-load study's agent (GRU 32, 2 x 64, 16 episodes per update, single
  head, task one-hot in the trunk) on ``copy(p=3,i=1)``;
- ``mlp``: Continual World's MLP (4 x 256, batch 128) on ``reach-v3``;
- ``gru``: the default recurrent agent (GRU 128, 2 x 256, 2 whole episodes per update) on ``reach-v3``.

For each, K = 1, 4, 16, 64 members in one :class:`agents.population.Population`, and beside them
the single-run trainer of main *before* populations (commit 4bb1578, from a ``git worktree`` of that
commit, run in a subprocess with the same python, the same config and seed, on the same machine,
in the same invocation). Each K is timed over whole update rounds (50 steps, 50 updates), and the efficiency
t(1)/t(K) is the time of K=1 over the time of K for those rounds (1: K members for free); the
memory column is the stacked weights and Adam state plus every member's replay (``--replay-size``
steps each; the default 1e6 of CW would not fit 64 members: see ``Population``'s refusal).

Last lines: ``speedup_small_K16: X`` (config small: K=16's aggregate steps/s over the old single
run) and ``k1_vs_single: Y`` (K=1 over the old single run, the worst of the configs).

    python scripts/bench_population.py [--configs small mlp gru] [--ks 1 4 16 64] [--rounds 2] [--repeats 3]
        [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BASELINE_COMMIT = "4bb1578"
ROOT = Path(__file__).resolve().parents[1]
ROUND = 50  # steps per update round (CW: 50 updates every 50 steps)

CONFIGS = {
    "small": dict(task="copy(p=3,i=1)", sac=dict(trunk="gru", rnn_size=32, hidden_sizes=(64, 64), batch_size=16,
                                                 heads="single", task_in_trunk=True, init_log_alpha=-3.0)),
    "mlp": dict(task="reach-v3", sac=dict(trunk="mlp")),
    "gru": dict(task="reach-v3", sac=dict(trunk="gru")),
}

# Runs in the process of either checkout: builds envs and agents, warms up, times `rounds` rounds.
TIMER = r"""
import json, sys, time
import gymnasium as gym, numpy as np, torch
torch.set_num_threads(1)
import contenv
from agents.sac import SAC, SACConfig
spec = json.loads(sys.argv[1])
def env():
    return gym.make("contenv/Sequence-v0", tasks=[spec["task"]], steps_per_task=10**8).unwrapped
config = SACConfig(**{**spec["sac"], "replay_size": spec["replay_size"], "random_steps": spec["warmup"],
                      "update_after": spec["warmup"], "update_every": 50})
if spec["k"] == 0:  # the single-run trainer of this checkout
    agent = SAC(env(), config, seed=0, device=spec["device"])
    run = agent.learn
    members = [agent]
else:
    from agents.population import Population
    agent = Population([env() for _ in range(spec["k"])], config, seeds=range(spec["k"]), device=spec["device"])
    run = agent.learn
    members = agent.members
run(spec["warmup"] + 1)  # past the random phase; the next round of updates starts at the next multiple of 50
start_updates = members[0].num_updates
t0 = time.perf_counter()
run(spec["rounds"] * 50)
seconds = time.perf_counter() - t0
state = sum(t.numel() * t.element_size() for m in members for net in (m.actor, m.critic, m.target_critic)
            for t in net.parameters()) * 3  # weights + Adam's two moments
replay = sum(a.nbytes for m in members for a in vars(m.replay).values() if isinstance(a, np.ndarray))
print(json.dumps({"seconds": seconds, "steps": spec["rounds"] * 50 * len(members),
                  "updates": members[0].num_updates - start_updates, "memory_mb": (state + replay) / 2**20}))
"""


def baseline_tree() -> Path:
    """A worktree of the commit before populations (made once, beside the repository's git dir)."""
    tree = Path(os.environ.get("CONTENV_BASELINE_TREE", f"/tmp/contenv_{BASELINE_COMMIT}"))
    if not (tree / "agents" / "sac.py").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", str(tree), BASELINE_COMMIT], check=True,
                       capture_output=True)
    return tree


def timed(tree: Path, spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", TIMER, json.dumps(spec)], cwd=tree, env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--rounds", type=int, default=2, help="update rounds (50 steps, 50 updates) timed per K")
    parser.add_argument("--replay-size", type=int, default=20_000, help="replay steps per member")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the old trainer, of K=1 and of every K of config small; the best counts")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if any(k <= 0 for k in args.ks) or args.rounds <= 0 or args.repeats <= 0:
        parser.error("--ks, --rounds and --repeats must be positive")
    old = baseline_tree()
    worst, small_k16 = None, None
    for name in args.configs:
        config = CONFIGS[name]
        warmup = 400 if config["sac"]["trunk"] == "mlp" else 1_000  # enough whole episodes for a batch
        base = dict(task=config["task"], sac=config["sac"], replay_size=args.replay_size, warmup=warmup,
                    rounds=args.rounds, device=args.device)
        # Processes of one code differ by ~15% here: the ratios that decide (K=1 and, for config small, every K)
        # take the best of --repeats runs, the old trainer's too, alternating so drift hits both alike.
        def best(tree: Path, k: int, repeats: int) -> dict:
            runs = [timed(tree, {**base, "k": k}) for _ in range(repeats)]
            return max(runs, key=lambda r: r["steps"] / r["seconds"])

        single = best(old, 0, args.repeats)
        rate_single = single["steps"] / single["seconds"]
        print(f"{name:6s} old single run ({BASELINE_COMMIT})  {rate_single:8.1f} steps/s   "
              f"{single['memory_mb']:8.1f} MB   {single['updates']} updates")
        t1 = None
        for k in args.ks:
            result = best(ROOT, k, args.repeats if k == 1 or name == "small" else 1)
            rate = result["steps"] / result["seconds"]
            per_member_time = result["seconds"]  # every member took the same steps
            if k == 1:
                t1 = per_member_time
                ratio = rate / rate_single
                worst = ratio if worst is None else min(worst, ratio)
            # t(K): wall time of the same rounds with K members; t(1)/t(K) = 1 would be K members for free.
            efficiency = f"{t1 / per_member_time:5.3f}" if t1 else "  n/a"
            print(f"{name:6s} population K={k:<3d}            {rate:8.1f} steps/s   {result['memory_mb']:8.1f} MB   "
                  f"x{rate / rate_single:5.2f} vs old single   efficiency t(1)/t(K) {efficiency}")
            if name == "small" and k == 16:
                small_k16 = rate / rate_single
        sys.stdout.flush()
    if small_k16 is not None:
        print(f"speedup_small_K16: {small_k16:.2f}")
    if worst is not None:
        print(f"k1_vs_single: {worst:.2f}")


if __name__ == "__main__":
    main()
