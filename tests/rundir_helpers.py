"""Synthetic run directories with known success curves, shared by the tests of sweeps, matrices and studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from contenv.evaluation.rundir import PROGRESS_FILE, success_column, write_config


def write_run(run_dir: Path, tasks: Sequence[str], curves: Sequence[Sequence[float]], steps_per_task: int = 100,
              eval_every: int = 20, **config: Any) -> Path:
    """A finished run: ``curves[i][k]`` is the success of position ``i`` at eval point ``k`` (steps
    ``eval_every, 2 eval_every, ...`` up to the end of the sequence); ``config`` overrides the defaults.

    ``progress.csv`` is written in one go (RunWriter's fsync per row is slow for many synthetic runs)."""
    write_config(run_dir, {"scenario": "contenv/Sequence-v0", "tasks": list(tasks), "steps_per_task": steps_per_task,
                           "seed": 0, "agent": "mlp", "protection": "finetune", "eval_every": eval_every, **config})
    steps = list(range(eval_every, steps_per_task * len(tasks) + 1, eval_every))
    columns = {"step": steps, "active_task": [(step - 1) // steps_per_task for step in steps]}
    for i, task in enumerate(tasks):
        columns[success_column(i, task)] = [float(curves[i][k]) for k in range(len(steps))]
    pd.DataFrame(columns).to_csv(Path(run_dir) / PROGRESS_FILE, index=False)
    return run_dir
