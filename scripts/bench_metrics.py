"""Time the full CW20 table: performance, forgetting and forward transfer with 90 % CIs.

Synthetic success tensors of the real CW20 shape (20 tasks, 1M steps per task, an eval
every 20k steps plus one at step 0: 1001 eval points) for 10 methods x 20 seeds, and
reference AUCs of 20 single-task seeds; every metric with 4000 bootstrap resamples.

    python scripts/bench_metrics.py --methods 10 --seeds 20
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro

from contenv.evaluation import metrics


@dataclass
class Args:
    """Benchmark of the CW20 metric table."""

    methods: int = 10
    """Number of methods (table rows)."""
    seeds: int = 20
    """Seeds per method (and reference seeds per task)."""
    tasks: int = 20
    """Sequence length (CW20: 20)."""
    steps_per_task: int = 1_000_000
    """Training steps of every task."""
    eval_every: int = 20_000
    """Steps between eval points."""
    repeats: int = 3
    """Timed repetitions per device; the best is reported."""


def synthetic_success(args: Args, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``[methods, seeds, E, T]`` success rates (multiples of 0.1, like 10 episodes) and steps."""
    steps = torch.arange(0, args.tasks * args.steps_per_task + 1, args.eval_every)
    shape = (args.methods, args.seeds, len(steps), args.tasks)
    success = (torch.rand(shape, generator=generator, dtype=torch.float64) * 10).round() / 10
    return success, steps


def table(success: torch.Tensor, steps: torch.Tensor, ref_auc: torch.Tensor, spt: int) -> list[dict]:
    rows = [metrics.cw_metrics(method, steps, spt, ref_auc) for method in success]
    if success.is_cuda:
        torch.cuda.synchronize()
    return rows


def main(args: Args) -> None:
    generator = torch.Generator().manual_seed(0)
    success, steps = synthetic_success(args, generator)
    ref_auc = torch.rand(args.seeds, args.tasks, generator=generator, dtype=torch.float64) * 0.9
    print(
        f"CW20 table: {args.methods} methods x {args.seeds} seeds, success {tuple(success.shape[1:])} per method, "
        f"{metrics.NUM_RESAMPLES} resamples, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        data = success.to(device), steps.to(device), ref_auc.to(device)
        table(*data, args.steps_per_task)  # warm-up (CUDA context, kernels)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            rows = table(*data, args.steps_per_task)
            times.append(time.perf_counter() - start)
        ft = rows[0]["forward_transfer"]
        print(
            f"{device}: {min(times):.3f} s for the full table (best of {args.repeats}; "
            f"{min(times) / args.methods * 1000:.1f} ms per method); "
            f"method 0 FT {float(ft.value):.3f} [{float(ft.lo):.3f}, {float(ft.hi):.3f}]"
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
