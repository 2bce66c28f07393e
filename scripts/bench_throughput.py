"""Training throughput: our SAC vs Stable-Baselines3 SAC, and recurrent SAC vs the MLP agent.

Default: the Continual World MLP agent against SB3's SAC on the same Meta-World task
(reach-v3 through contenv), same network sizes (4 x 256 actor and critics), batch 128, the
CW update ratio (50 updates every 50 steps), same device and torch threads. The last line
is ``ratio_vs_sb3: X`` (our env steps per second / SB3's).

With ``--recurrent``: our recurrent agents with their *default* settings (whole-episode
windows of up to 200 steps, 2 windows per update, GRU 128, 2 x 256 heads; see
``agents.sac.SACConfig``) against the MLP agent with its defaults, on the same task, with
the same update ratio. Then the parallel-scan trunk against the GRU with windows of 32
and of 200 steps. Every agent is first run past its random phase, then all are timed in
interleaved chunks, so load changes on a shared machine hit them alike. Each agent's
matrix-product GFLOP per update is counted too (``work_ratio_mlp_vs_mingru``: the MLP's over
the minGRU's, the throughput ratio the minGRU would have if both ran at the same arithmetic
speed). The last line is ``ratio_gru_vs_mlp: X``.

    python scripts/bench_throughput.py [--chunks 4] [--chunk-steps 500] [--device cpu]
    python scripts/bench_throughput.py --recurrent [--trunks gru lstm mingru] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import contenv  # noqa: F401  (registers the ids)
from agents.nets.networks import TRUNKS

TASK = "reach-v3"
HIDDEN = (256, 256, 256, 256)


def make_env() -> gym.Env:
    return gym.make("contenv/Sequence-v0", tasks=[TASK], steps_per_task=10**8)


def ours(trunk: str, device: str, warmup: int, **overrides):
    """An agent with its trunk's default settings (CW's for the MLP), CW's update ratio."""
    from agents.sac import SAC, SACConfig

    config = SACConfig(trunk=trunk, random_steps=warmup, update_after=warmup, update_every=50, replay_size=200_000,
                       **overrides)
    return SAC(make_env(), config, seed=0, device=device)


def sb3_sac(device: str, warmup: int):
    from stable_baselines3 import SAC

    return SAC("MlpPolicy", make_env(), learning_starts=warmup, batch_size=128, train_freq=50, gradient_steps=50,
               buffer_size=200_000, policy_kwargs={"net_arch": list(HIDDEN)}, seed=0, device=device)


def timed(learn, steps: int) -> float:
    start = time.perf_counter()
    learn(steps)
    return steps / (time.perf_counter() - start)


def matmul_gflop_per_update(agent, updates: int = 50) -> float:
    """Matrix-product GFLOP of one update (``updates`` env steps at one update per step)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        agent.learn(updates)
    return counter.get_total_flops() / updates / 1e9


def interleaved(learners: dict, args: argparse.Namespace) -> dict[str, float]:
    """Median env steps/s of each learner over interleaved chunks."""
    speeds: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(args.chunks):
        for name, learn in learners.items():
            speeds[name].append(timed(learn, args.chunk_steps))
    return {name: float(np.median(values)) for name, values in speeds.items()}


def compare_sb3(args: argparse.Namespace) -> None:
    mlp, sb3 = ours("mlp", args.device, args.warmup), sb3_sac(args.device, args.warmup)
    mlp.learn(args.warmup + 50)  # past the random phase: every timed chunk includes updates
    sb3.learn(args.warmup + 50)
    speed = interleaved({"contenv": mlp.learn, "sb3": lambda n: sb3.learn(n, reset_num_timesteps=False)}, args)
    print(f"MLP SAC: contenv {speed['contenv']:7.1f} steps/s   SB3 SAC {speed['sb3']:7.1f} steps/s   "
          f"(median of {args.chunks} interleaved chunks of {args.chunk_steps} steps)")
    print(f"ratio_vs_sb3: {speed['contenv'] / speed['sb3']:.2f}")


def compare_recurrent(args: argparse.Namespace) -> None:
    agents = {"mlp": ours("mlp", args.device, args.warmup)}
    for trunk in args.trunks:
        agents[trunk] = ours(trunk, args.device, args.warmup)
    scan = "mingru" if "mingru" in args.trunks else None
    if scan and "gru" in args.trunks:  # the same two trunks with 32-step windows
        agents["gru T=32"] = ours("gru", args.device, args.warmup, seq_len=32)
        agents[f"{scan} T=32"] = ours(scan, args.device, args.warmup, seq_len=32)
    for agent in agents.values():
        agent.learn(args.warmup + 50)
    speed = interleaved({name: agent.learn for name, agent in agents.items()}, args)
    work = {name: matmul_gflop_per_update(agent) for name, agent in agents.items()}
    print(f"median of {args.chunks} interleaved chunks of {args.chunk_steps} steps, default settings per trunk:")
    for name, agent in agents.items():
        cfg = agent.config
        shape = "128 transitions" if cfg.trunk == "mlp" else f"{cfg.batch_size} windows <= {cfg.seq_len} steps"
        print(f"  {name:12s} {speed[name]:7.1f} steps/s   {work[name]:6.3f} GFLOP/update   {shape}, "
              f"hidden {list(cfg.hidden_sizes)}" + ("" if cfg.trunk == "mlp" else f", cell {cfg.rnn_size}"))
    print("  (GFLOP/update: matrix products counted by torch's FlopCounterMode; products inside a fused kernel,\n"
          "   the LSTM's oneDNN call and the GRU's TorchScript recurrence, are not seen, so theirs are too low)")
    for trunk in args.trunks:
        if trunk != "gru":
            print(f"ratio_{trunk}_vs_mlp: {speed[trunk] / speed['mlp']:.2f}")
    if "mingru" in args.trunks:  # every product of the minGRU update is visible to the counter
        print(f"work_ratio_mlp_vs_mingru: {work['mlp'] / work['mingru']:.2f} "
              "(the throughput ratio at equal arithmetic speed)")
    if scan and "gru" in args.trunks:
        print(f"ratio_{scan}_vs_gru at T=32: {speed[f'{scan} T=32'] / speed['gru T=32']:.2f}")
        print(f"ratio_{scan}_vs_gru at T=200: {speed[scan] / speed['gru']:.2f}")
    if "gru" in args.trunks:
        print(f"ratio_gru_vs_mlp: {speed['gru'] / speed['mlp']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks per agent (interleaved)")
    parser.add_argument("--chunk-steps", type=int, default=500, help="env steps per timed chunk")
    parser.add_argument("--warmup", type=int, default=1000, help="random steps before updates start (every agent)")
    parser.add_argument("--device", default="cpu", help="torch device for every agent (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--recurrent", action="store_true", help="time the recurrent agents against the MLP agent")
    parser.add_argument("--trunks", nargs="+", default=[t for t in TRUNKS if t != "mlp"],
                        choices=[t for t in TRUNKS if t != "mlp"], help="recurrent trunks to time (--recurrent)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{TASK}, 50 updates every 50 steps, device {args.device}, {args.threads} torch thread(s), "
          f"torch {torch.__version__}")
    if args.recurrent:
        compare_recurrent(args)
    else:
        compare_sb3(args)


if __name__ == "__main__":
    main()
