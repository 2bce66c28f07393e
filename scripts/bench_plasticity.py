"""Loss of plasticity benchmark: learning speed of early vs late tasks, per method.

Scenario: ``contenv/RemappedMemory-v0``, one short memory task (copy one symbol over
one step, 2-step episodes) whose answer mapping changes at every task (each mapping a
derangement of the previous one, so every old answer is wrong), task id hidden (one
shared head), the replay emptied at every task start (CW's rule) but one Adam for the
whole run (CW makes a new one per task; a kept Adam is one driver of plasticity loss). A
small GRU agent with a plain ReLU body (``--body relu``; CW's LayerNorm + tanh / leaky ReLU
body loses plasticity too, but less, see the README) must relearn the mapping
from scratch at every task; the learning speed of task
``i`` is its success averaged over its own window (training episodes of that task,
read every ``chunk`` steps), and ``contenv.evaluation.metrics.learning_speed`` turns the runs into
early vs late learning speed, their difference and the trend against task index, with
90 % bootstrap CIs over seeds.

Every trial is saved as JSON under ``OUT/<method>/seed<k>.json`` (a rerun skips finished
trials); at the end the table is printed (markdown) and ``OUT/plasticity.png`` drawn.

Examples::

    python scripts/bench_plasticity.py --seeds 3 --workers 2   # the README's table (about 45 min on 2 idle cores)
    python scripts/bench_plasticity.py --body cw --methods finetune cbp shrink-perturb --out runs/bench_plasticity_cw
    python scripts/bench_plasticity.py --methods finetune cbp --seeds 2 --num-tasks 10 --steps-per-task 200
    python scripts/bench_plasticity.py --report-only
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tyro

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a checkout
    sys.path.insert(0, str(ROOT))


@dataclass
class BenchArgs:
    """Loss-of-plasticity benchmark on contenv/RemappedMemory-v0."""

    methods: tuple[str, ...] = ("finetune", "cbp", "shrink-perturb", "l2-init")
    """Protection methods (registered names)."""
    seeds: int = 2
    """Seeds per method (CIs are over seeds)."""
    num_tasks: int = 50
    """Tasks of the sequence (the registered scenario has 50)."""
    steps_per_task: int = 300
    """Env steps per task (150 two-step episodes)."""
    chunk: int = 50
    """Steps per point of a task's learning curve (mean success of the episodes that ended in it)."""
    hidden: int = 16
    """Width of the two body layers (small networks lose plasticity sooner)."""
    rnn_size: int = 8
    """GRU width."""
    body: str = "relu"
    """Hidden layers of the heads: relu (plain ReLU, where the loss is largest) or cw (LayerNorm + tanh, then leaky
    ReLU; Continual World's, which loses less)."""
    replay_ratio: int = 4
    """Updates per env step (high ratios speed up the loss of plasticity)."""
    lr: float = 3e-3
    """Adam learning rate (CW: 1e-3; larger steps lose plasticity sooner)."""
    reset_optimizer: bool = False
    """A new Adam at every task start (CW: yes). Off by default: Adam's state carried across tasks is one of
    the drivers of plasticity loss (Dohare et al. 2024; Lyle et al. 2023)."""
    method_kwargs: str = '{"cbp": {"maturity": 100, "rate": 1e-3}, "shrink-perturb": {"shrink": 0.8, "perturb": 0.01}}'
    """JSON object: per-method keyword arguments."""
    workers: int = 2
    """Trials run in parallel processes."""
    out: Path = Path("runs/bench_plasticity")
    """Where trials, the table and the plot go."""
    report_only: bool = False
    """Only print the table and draw the plot from the trials there."""


def agent_config(args: BenchArgs) -> Any:
    from agents.sac import SACConfig

    return SACConfig(trunk="gru", hidden_sizes=(args.hidden, args.hidden), rnn_size=args.rnn_size, body=args.body,
                     batch_size=32,
                     seq_len=2, random_steps=50, update_after=50, update_every=10,
                     gradient_steps=10 * args.replay_ratio, lr=args.lr, init_log_alpha=-3.0,
                     reset_optimizer_on_task_change=args.reset_optimizer)


def run_trial(job: tuple[str, int, dict[str, Any], Path]) -> str:
    """One method x seed; writes the per-chunk success of the active task."""
    method, seed, settings, path = job
    import gymnasium as gym
    import torch

    import contenv  # noqa: F401
    from agents.protection import make_protection
    from agents.sac import SAC

    torch.set_num_threads(1)
    args = BenchArgs(**{k: v for k, v in settings.items() if k not in ("out",)})
    env = gym.make("contenv/RemappedMemory-v0", num_tasks=args.num_tasks, steps_per_task=args.steps_per_task)
    kwargs = json.loads(args.method_kwargs).get(method, {})
    agent = SAC(env, agent_config(args), protection=make_protection(method, **kwargs), seed=seed)
    rows: list[tuple[int, int, float]] = []
    pending: list[float] = []

    def on_step(a):
        if a._episode_log:
            pending.extend(success for _, success, _ in a._episode_log)
            a._episode_log.clear()
        if a.num_timesteps % args.chunk == 0:
            rows.append((a.num_timesteps, a.current_task, sum(pending) / len(pending) if pending else 0.0))
            pending.clear()

    started = time.perf_counter()
    agent.learn(args.num_tasks * args.steps_per_task, callback=on_step)
    result = {"method": method, "seed": seed, "settings": settings, "seconds": time.perf_counter() - started,
              "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return f"{method} seed {seed}: {result['seconds']:.0f} s"


def trial_settings(args: BenchArgs) -> dict[str, Any]:
    """The settings every trial under ``--out`` must share (what a table row compares)."""
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(args).items() if k not in ("methods", "seeds", "workers", "report_only", "out")}


def load_trials(args: BenchArgs) -> dict[str, list[dict[str, Any]]]:
    """Finished trials per method. A table must not mix settings: trials made with settings other
    than ``args``' (with ``--report-only``: than the first trial's) are refused. Trials written
    before ``body`` existed had CW's."""
    trials: dict[str, list[dict[str, Any]]] = {}
    wanted = None if args.report_only else trial_settings(args)
    for method in args.methods:
        for path in sorted((args.out / method).glob("seed*.json")):
            trial = json.loads(path.read_text())
            saved = {"body": "cw", **{k: v for k, v in trial["settings"].items() if k != "out"}}
            wanted = saved if wanted is None else wanted
            differ = sorted(k for k in wanted if saved.get(k) != wanted[k])
            if differ:
                changes = ", ".join(f"{k}: {saved.get(k)!r}, now {wanted[k]!r}" for k in differ)
                raise SystemExit(f"{path} was made with other settings ({changes}); use another --out, or pass the "
                                 "same settings (nothing was written)")
            trials.setdefault(method, []).append(trial)
    return trials


def success_tensor(trials: list[dict[str, Any]], num_tasks: int):
    """``[S, E, T]`` success of the active task at every chunk (0 elsewhere) and ``[E]`` steps."""
    import torch

    steps = torch.tensor([r[0] for r in trials[0]["rows"]])
    success = torch.zeros(len(trials), len(steps), num_tasks)
    for s, trial in enumerate(trials):
        for e, (_, task, value) in enumerate(trial["rows"]):
            success[s, e, task] = value
    return success, steps


SMOOTH = 5


def moving_average(values: list[float], window: int) -> list[float]:
    """Means of every ``window`` consecutive values.

    Example:
        >>> moving_average([1.0, 2.0, 3.0, 4.0], 2)
        [1.5, 2.5, 3.5]
    """
    return [sum(values[i:i + window]) / window for i in range(len(values) - window + 1)]


def report(args: BenchArgs) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from contenv.evaluation.metrics import learning_speed

    trials = load_trials(args)
    if not trials:
        raise SystemExit(f"no trials under {args.out}")
    lines = ["| method | seeds | early tasks | late tasks | late - early | trend (per 10 tasks) | s / run |",
             "|---|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for method, runs in trials.items():
        settings = runs[0]["settings"]
        success, steps = success_tensor(runs, settings["num_tasks"])  # shared: load_trials checked
        out = learning_speed(success, steps, settings["steps_per_task"])

        def fmt(est, scale=1.0):
            return f"{scale * est.value.item():.2f} [{scale * est.lo.item():.2f}, {scale * est.hi.item():.2f}]"

        seconds = sum(r["seconds"] for r in runs) / len(runs)
        lines.append(f"| {method} | {len(runs)} | {fmt(out['early'])} | {fmt(out['late'])} | "
                     f"{fmt(out['late_minus_early'])} | {fmt(out['trend'], 10.0)} | {seconds:.0f} |")
        x = list(range(1, settings["num_tasks"] + 1))
        line, = ax.plot(x, out["auc"].value.tolist(), lw=0.6, alpha=0.5)
        # Per-task values are noisy (100-150 episodes a task): a centred mean over SMOOTH tasks shows the trend.
        smooth = moving_average(out["auc"].value.tolist(), SMOOTH)
        ax.plot(x[SMOOTH // 2: SMOOTH // 2 + len(smooth)], smooth, color=line.get_color(), lw=2.0,
                label=f"{method} ({SMOOTH}-task mean)")
        ax.fill_between(x, out["auc"].lo.tolist(), out["auc"].hi.tolist(), color=line.get_color(), alpha=0.12)
    ax.axhline(0.25, color="gray", ls=":", lw=1, label="chance (1 of 4 answers)")
    ax.set_xlabel("task (answer mapping) index")
    ax.set_ylabel("learning speed: success AUC in task window")
    ax.set_ylim(0, 1)
    ax.set_title(f"RemappedMemory, {args.body} body: learning speed per task (90% bootstrap CI over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "plasticity.png")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(BenchArgs, args=argv, description=__doc__)
    load_trials(args)  # refuses an --out whose trials were made with other settings
    if not args.report_only:
        settings = {**trial_settings(args), "out": str(args.out)}
        jobs = [(m, s, settings, args.out / m / f"seed{s}.json") for s in range(args.seeds) for m in args.methods]
        jobs = [job for job in jobs if not job[3].exists()]
        if args.workers > 1:
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                for line in pool.map(run_trial, jobs):
                    print(line, flush=True)
        else:
            for job in jobs:
                print(run_trial(job), flush=True)
    print(report(args))
    print(f"plot: {args.out / 'plasticity.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
