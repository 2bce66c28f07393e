"""Forgetting benchmark of the protection methods: every method x seeds, GRU agent.

Two short scenarios, each a three-task ``contenv/Sequence-v0``:

- ``memory``: ``repeat-first(d=2)`` (hold the first symbol through two distractors),
  ``copy(p=1,i=1)`` (hold one flagged symbol, no distractors), ``bits(n=2,d=1)`` (hold two
  bits, answer the one asked). Each task keeps its own head, as in CW, so forgetting comes
  from the shared recurrent memory and trunk. (Three ``repeat-first`` tasks that differ
  only in the answer mapping were tried first: there fine-tuning hardly forgets, since
  every task needs the same memory and the heads absorb the different answers.)
- ``metaworld``: ``reach-v3`` then ``window-close-v3`` (horizon 100).

Every trial is one ``scripts/train.py`` run directory (``OUT/<scenario>/<method>/seed<k>``),
so the benchmark resumes: finished runs are skipped, killed ones continue from their last
checkpoint. At the end the Continual World table of each scenario is printed
(``contenv.evaluation.report``; forward transfer needs reference runs and is left out).

Budgets (``--budget``; ``--smoke`` is ``--budget smoke --seeds 1``):

- ``smoke``: a few hundred steps per task and tiny networks: checks that every method
  runs end to end (2 min for all methods of both scenarios, one seed, ``--workers 2``);
- ``short`` (default): 2,000 steps per memory task (GRU 32 + 2 x 64), 6,000 per
  Meta-World task. The memory tasks are learned at this budget; reach-v3 only begins to
  be (about 0.4 success at 6,000 steps), so the Meta-World table is a small-budget check,
  far from CW's 1M steps. Measured on the shared 2-core machine, one memory run takes
  40-110 s (finetune, regularisers, PackNet, hnet) and about 180 s (perfect-memory
  replay, batch 512); one Meta-World run about 3 min;
- ``full``: 20,000 (memory) and 200,000 (Meta-World) steps per task and a larger GRU, for
  a machine with many cores (``--workers``).

Settings that differ from Continual World and why: the memory scenario starts every
entropy coefficient at ``log alpha = -3`` (CW: 1.0, which keeps the policy near uniform
for thousands of updates: more than a short budget has; with 1.0 nothing is learned in
4,000 steps); PackNet retrains for a tenth of a task's updates (CW: 100,000 of 1M);
the hypernetwork uses hidden layers (32, 32), which keeps its compression ratio at 0.95
for these small actors (the default (64, 64) is sized for CW's 4 x 256 actor).

Examples::

    python scripts/bench_forgetting.py --smoke
    python scripts/bench_forgetting.py --workers 2
    python scripts/bench_forgetting.py --methods finetune packnet hnet --scenarios memory --seeds 5
    python scripts/bench_forgetting.py --report-only          # tables of what is there
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tyro

METHODS = ("finetune", "l2", "ewc", "online-ewc", "mas", "packnet", "hnet", "replay", "agem", "vcl", "clonex",
           "multitask")
MULTITASK = "multitask"  # not a protection: the multi-task baseline (train --multitask)
SCENARIOS = {
    "memory": ("repeat-first(d=2)", "copy(p=1,i=1)", "bits(n=2,d=1)"),
    "metaworld": ("reach-v3", "window-close-v3"),
}
# Per budget: the agent, then per scenario the schedule (steps per task, eval grid, episode length).
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "agent": dict(hidden_sizes=(16, 16), rnn_size=8, batch_size=8, seq_len=4, random_steps=50, update_after=50,
                      update_every=50),
        "memory": dict(steps_per_task=200, eval_every=100, eval_episodes=2, init_log_alpha=-3.0),
        "metaworld": dict(steps_per_task=150, horizon=50, eval_every=150, eval_episodes=1),
    },
    "short": {
        "agent": dict(hidden_sizes=(64, 64), rnn_size=32, batch_size=32, seq_len=4, random_steps=500,
                      update_after=500, update_every=50),
        "memory": dict(steps_per_task=2000, eval_every=250, eval_episodes=10, init_log_alpha=-3.0),
        # reach-v3 starts to be solved after ~5k steps with this GRU (0.4 success at 6k).
        "metaworld": dict(steps_per_task=6000, horizon=100, eval_every=1000, eval_episodes=5, init_log_alpha=-3.0),
    },
    "full": {
        "agent": dict(hidden_sizes=(256, 256), rnn_size=128, batch_size=64, seq_len=16, random_steps=5000,
                      update_after=1000, update_every=50),
        "memory": dict(steps_per_task=20_000, eval_every=1000, eval_episodes=10, init_log_alpha=-3.0),
        "metaworld": dict(steps_per_task=200_000, horizon=200, eval_every=10_000, eval_episodes=10),
    },
}


@dataclass
class BenchArgs:
    """Forgetting of every protection method on a short memory and a short Meta-World sequence."""

    out: Path = Path("runs/bench_forgetting")
    """Root of the run directories: OUT/<scenario>/<method>/seed<k>."""
    budget: Literal["smoke", "short", "full"] = "short"
    """Steps, networks and eval grid (see the module docstring)."""
    smoke: bool = False
    """Shorthand for --budget smoke --seeds 1 (a quick end-to-end check)."""
    methods: tuple[str, ...] = METHODS
    """Protection methods to run."""
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    """Scenarios: memory, metaworld."""
    seeds: int = 3
    """Seeds 0 .. seeds-1 per method and scenario."""
    workers: int = 1
    """Runs in parallel (processes; each uses one torch thread)."""
    report_only: bool = False
    """Print the tables of the runs under OUT without training."""
    protection_kwargs: str = "{}"
    """Extra per-method arguments as JSON, e.g. '{"hnet": {"beta": 0.5}}' (override the defaults below)."""
    final_points: int = 5
    """Eval points averaged for final and end-of-task values (Continual World: 5; fewer if a task has fewer)."""
    extra_methods: list[str] = field(default_factory=list)
    """Further registered protections to include (e.g. a composite)."""


def method_kwargs(method: str, budget: str, scenario: str) -> dict[str, Any]:
    """Budget-dependent arguments of a method (everything else: its CW defaults)."""
    schedule, agent = BUDGETS[budget][scenario], BUDGETS[budget]["agent"]
    updates_per_task = schedule["steps_per_task"] - agent["update_after"]
    if method == "packnet":
        return {"retrain_steps": max(1, updates_per_task // 10)}  # CW: 100k retraining of 1M updates
    if method == "hnet":
        return {"hidden_sizes": [32, 32]}  # compression ratio 0.95 for these actors
    return {}


def trial_args(method: str, scenario: str, seed: int, args: BenchArgs, budget: str) -> Any:
    from agents.training.run import TrainArgs

    settings = BUDGETS[budget]
    extra = json.loads(args.protection_kwargs).get(method, {})
    run_dir = args.out / scenario / method / f"seed{seed}"
    multitask = method == MULTITASK
    return TrainArgs(
        scenario="contenv/Sequence-v0", tasks=SCENARIOS[scenario], agent="gru",
        protection="finetune" if multitask else method, multitask=multitask,
        protection_kwargs=json.dumps({**method_kwargs(method, budget, scenario), **extra}), seed=seed,
        run_dir=run_dir, resume=(run_dir / "config.json").exists(), eval_deterministic_episodes=0,
        checkpoint_every=10**9, progress_bar=False, torch_threads=1, **settings["agent"], **settings[scenario],
    )


def run_trial(train_args: Any) -> tuple[str, float, str | None]:
    """One training run in a worker process: (run dir, seconds, error or None)."""
    from agents.training.run import train

    started = time.perf_counter()
    try:
        train(train_args)
    except Exception as err:  # noqa: BLE001 - one failed trial must not stop the others
        return str(train_args.run_dir), time.perf_counter() - started, f"{type(err).__name__}: {err}"
    return str(train_args.run_dir), time.perf_counter() - started, None


def report(args: BenchArgs) -> None:
    from contenv.evaluation.report import build_reports, render
    from contenv.evaluation.rundir import load_runs

    for scenario in args.scenarios:
        runs, errors = load_runs([args.out / scenario]) if (args.out / scenario).exists() else ([], [])
        if not runs:
            print(f"\n{scenario}: no runs under {args.out / scenario}")
            continue
        points_per_task = min(run.steps_per_task for run in runs) // min(run.config["eval_every"] for run in runs)
        reports, more = build_reports(runs, None, "cpu", max(1, min(args.final_points, points_per_task)))
        for error in errors + more:
            print(f"error: {error}", file=sys.stderr)
        for scenario_report in reports:
            scenario_report.scenario = f"{scenario}: {', '.join(scenario_report.tasks)}"
        print()
        print(render(reports, "md"))


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(BenchArgs, args=argv, description=__doc__)
    budget, seeds = ("smoke", 1) if args.smoke else (args.budget, args.seeds)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        print(f"error: unknown scenarios {unknown}; allowed: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if not args.report_only:
        from agents.protection import PROTECTIONS

        methods = [m for m in (*args.methods, *args.extra_methods) if m in PROTECTIONS or "+" in m or m == MULTITASK]
        for missing in sorted(set(args.methods) - set(methods)):
            print(f"note: protection {missing!r} is not available; skipped", file=sys.stderr)
        trials = [trial_args(m, s, seed, args, budget) for s in args.scenarios for m in methods for seed in range(seeds)]
        print(f"{len(trials)} runs ({budget} budget) under {args.out}, {args.workers} at a time", file=sys.stderr)
        failed = 0
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for run_dir, seconds, error in pool.map(run_trial, trials):
                failed += error is not None
                print(f"{'FAILED' if error else 'done  '} {run_dir} ({seconds:.0f} s){': ' + error if error else ''}",
                      file=sys.stderr, flush=True)
        if failed:
            print(f"error: {failed} runs failed (rerun the same command to resume them)", file=sys.stderr)
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
