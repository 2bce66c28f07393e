"""Learning benchmark of the SAC agents: memory (GRU vs MLP) and Meta-World (MLP).

1. Memory: ``repeat-first(d=5)`` shows a symbol, then 5 random distractor symbols, then
   asks for the first one. A reactive policy is at chance (0.25); the GRU agent must
   carry the symbol in its recurrent state. Both agents get the same settings.
2. Meta-World: the Continual World MLP agent (CW hyperparameters) on ``reach-v3``
   must reach a stochastic test success of at least 0.8 within the stated budget.

Every run goes through the training script's code (``agents.run.train``) into a run
directory, and is evaluated by the batched evaluator; the script prints steps, wall
time and success per run, and exits non-zero if a claim fails.

Example:
    python scripts/bench_learning.py                          # both parts, ~15 min on 2 CPU cores
    python scripts/bench_learning.py --parts memory --memory-task "tmaze(L=20)"
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from agents.run import TrainArgs, train
from contenv.rundir import load_run

CHANCE = {"repeat-first": 0.25, "copy": None, "tmaze": 0.5, "bits": 0.5}


@dataclass
class Args:
    """Learning benchmark: GRU vs MLP on a memory task, MLP on a Meta-World task."""

    parts: tuple[str, ...] = ("memory", "metaworld")
    """Which parts to run: memory, metaworld."""
    memory_task: str = "repeat-first(d=5)"
    """Memory task spec (repeat-first(d=...) or tmaze(L=...))."""
    memory_steps: int = 16_000
    """Training steps of each agent on the memory task."""
    metaworld_task: str = "reach-v3"
    """Meta-World task for the MLP agent."""
    metaworld_steps: int = 30_000
    """Training steps of the MLP agent on the Meta-World task (the stated budget)."""
    threshold: float = 0.8
    """Success the learning agents must reach."""
    seed: int = 0
    """Seed of every run."""
    out_dir: Optional[Path] = None
    """Where the run directories go (default: a temporary directory)."""
    device: str = "cpu"
    """Torch device."""


def run(name: str, args: TrainArgs) -> dict:
    started = time.perf_counter()
    train(args)
    seconds = time.perf_counter() - started
    result = load_run(args.run_dir)
    success = result.stochastic[:, 0]
    reached = (success >= 0.8).nonzero()
    row = dict(name=name, steps=int(result.steps[-1]), seconds=seconds, final=float(success[-1]),
               best=float(success.max()), mean=float(success.mean()), first_at=int(result.steps[reached[0, 0]]) if len(reached) else None,
               curve=[round(float(s), 2) for s in success])
    first = f"{row['first_at']:>7}" if row["first_at"] is not None else "  never"
    print(f"{name:28s} {row['steps']:>7} steps {seconds:7.0f} s   final {row['final']:.2f}   best {row['best']:.2f}"
          f"   mean {row['mean']:.2f}"
          f"   >=0.8 at {first}   curve {row['curve']}", flush=True)
    return row


def episode_length(task: str) -> int:
    """Longest episode of a memory task: replayed sub-sequences hold whole episodes."""
    from contenv.tasks.registry import make_task

    env = make_task(task)
    return int(getattr(env, "max_steps", env.episode_length))


def memory_args(agent: str, task: str, steps: int, out: Path, seed: int, device: str) -> TrainArgs:
    return TrainArgs(
        scenario="contenv/Sequence-v0", tasks=(task,), steps_per_task=steps, agent=agent, seed=seed, device=device,
        hidden_sizes=(64, 64), rnn_size=64, batch_size=32, seq_len=episode_length(task), random_steps=1_000, update_after=1_000,
        eval_every=2_000, eval_episodes=50, eval_deterministic_episodes=1, checkpoint_every=10**9,
        run_dir=out / f"memory_{agent}", progress_bar=False,
    )


def metaworld_args(task: str, steps: int, out: Path, seed: int, device: str) -> TrainArgs:
    # Continual World's agent and hyperparameters (the TrainArgs defaults); only the budget and eval cadence shrink.
    return TrainArgs(
        scenario="contenv/Sequence-v0", tasks=(task,), steps_per_task=steps, agent="mlp", seed=seed, device=device,
        eval_every=2_500, eval_episodes=10, checkpoint_every=10**9, run_dir=out / "metaworld_mlp", progress_bar=False,
    )


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__)
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_learning_"))
    failures = []
    print(f"run directories under {out}\n")
    if "memory" in args.parts:
        chance = CHANCE.get(args.memory_task.split("(")[0])
        print(f"memory: {args.memory_task}, chance {chance}")
        gru = run(f"gru  {args.memory_task}", memory_args("gru", args.memory_task, args.memory_steps, out, args.seed, args.device))
        mlp = run(f"mlp  {args.memory_task}", memory_args("mlp", args.memory_task, args.memory_steps, out, args.seed, args.device))
        if gru["final"] < args.threshold:
            failures.append(f"GRU final success {gru['final']:.2f} < {args.threshold}")
        if chance is not None and mlp["mean"] > chance + 0.1:
            failures.append(f"MLP mean success {mlp['mean']:.2f} is above chance {chance}: the task leaks the answer?")
        print()
    if "metaworld" in args.parts:
        print(f"metaworld: {args.metaworld_task}, Continual World MLP agent, budget {args.metaworld_steps} steps")
        mw = run(f"mlp  {args.metaworld_task}", metaworld_args(args.metaworld_task, args.metaworld_steps, out, args.seed, args.device))
        if mw["best"] < args.threshold:
            failures.append(f"MLP on {args.metaworld_task}: best success {mw['best']:.2f} < {args.threshold}")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
