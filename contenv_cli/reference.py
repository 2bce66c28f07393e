"""Single-task reference runs: every task of a scenario trained alone, same agent settings.

Forward transfer compares how fast a task is learned inside the sequence with how fast
it is learned from scratch (Continual World's FT uses the area under the success curve
of such a reference run). This script trains each distinct task of ``--scenario`` on its
own (``contenv/Sequence-v0`` with one task, the scenario's ``steps_per_task``, horizon
and reward version, and every agent argument of ``contenv train``) into

    <out-dir>/<task>/seed<seed>/          (a run directory, as written by train.py)

which ``contenv report --reference <out-dir>`` reads. Finished runs are skipped;
``--resume`` continues unfinished ones.

Reference runs are plain SAC, as Continual World's ``run_single.py`` (which builds the bare
``SAC`` class, no continual-learning method): with one task there is nothing to protect,
and a method's side effects (PackNet's pruning, a regulariser's anchor, a replay's batch
size) would make the reference something other than "the same agent learning the task from
scratch". ``--protection`` other than ``finetune`` is therefore refused, before anything is
created.

Example:
    contenv reference --scenario contenv/CW10-v0 --seeds 0-2 --out-dir runs/reference/cw10
    contenv report runs/cw10 --reference runs/reference/cw10
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from agents.population import parse_seeds
from agents.training.checkpoint import CheckpointError
from agents.training.run import TrainArgs, make_scenario, train
from contenv.evaluation.rundir import RunLoadError, load_run


@dataclass
class ReferenceArgs(TrainArgs):
    """Train every task of a scenario alone (the agent arguments are train.py's)."""

    out_dir: Optional[Path] = None
    """Where the reference runs go (default: runs/reference/<scenario>/<agent>)."""
    seeds: str = "0"
    """Seeds to run for every task: 0-4, 0,3,7 or 0-2,9 (--seed is ignored)."""
    only_tasks: tuple[str, ...] = ()
    """Run only these tasks of the scenario (default: all of them)."""


def check_plain_sac(args: ReferenceArgs) -> None:
    """Refuse a protection method: reference runs are plain SAC (CW's ``run_single.py``).

    Raises:
        ValueError: ``--protection`` is not ``finetune`` or ``--protection-kwargs`` is not empty.
    """
    if args.protection != "finetune" or args.protection_kwargs.strip() not in ("", "{}"):
        raise ValueError(
            f"reference runs are plain SAC, as Continual World's run_single.py (no continual-learning method), "
            f"but --protection {args.protection} --protection-kwargs {args.protection_kwargs} was given; "
            "drop --protection (the default, finetune, is plain SAC)")


def reference_runs(args: ReferenceArgs) -> list[Path]:
    """Train (or skip, when finished) one run per distinct task and seed; their directories."""
    check_plain_sac(args)
    scenario = make_scenario(args)
    tasks = list(dict.fromkeys(scenario.task_names))  # CW20 repeats CW10: each task once
    unknown = sorted(set(args.only_tasks) - set(tasks))
    if unknown:
        raise ValueError(f"--only-tasks {unknown} are not in {args.scenario} (its tasks: {', '.join(tasks)})")
    out_dir = args.out_dir or Path("runs") / "reference" / args.scenario.split("/")[-1] / args.agent
    run_dirs = []
    for task in tasks:
        if args.only_tasks and task not in args.only_tasks:
            continue
        for seed in parse_seeds(args.seeds):
            run_dir = out_dir / task / f"seed{seed}"
            single = dataclasses.replace(
                args, scenario="contenv/Sequence-v0", tasks=(task,), scenario_kwargs="{}",
                steps_per_task=scenario.steps_per_task, horizon=scenario.horizon,
                reward_version=scenario.reward_version, task_id=scenario.task_id, seed=seed, run_dir=run_dir,
            )
            # Not TrainArgs.seeds (batched seeds): each reference run is one seed.
            train_args = TrainArgs(**{f.name: getattr(single, f.name) for f in dataclasses.fields(TrainArgs)
                                      if f.name != "seeds"})
            if _finished(run_dir):
                print(f"{task} seed {seed}: finished, skipped ({run_dir})")
            else:
                train_args.resume = train_args.resume and (run_dir / "config.json").exists()
                print(f"{task} seed {seed}: training {scenario.steps_per_task} steps -> {run_dir}")
                train(train_args)
            run_dirs.append(run_dir)
    scenario.close()
    return run_dirs


def _finished(run_dir: Path) -> bool:
    try:
        return load_run(run_dir).is_complete
    except RunLoadError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ReferenceArgs, args=argv, description=__doc__, prog="contenv reference")
    try:
        run_dirs = reference_runs(args)
    except (ValueError, NotImplementedError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(run_dirs)} reference runs under {run_dirs[0].parent.parent if run_dirs else args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
