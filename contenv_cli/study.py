"""Run a study: its resumable training runs (the sweep machinery), then its report and verdict.

A study (``contenv/studies/``) expands into ``contenv train`` run directories under
``OUT/runs/<budget>/`` (logs in ``OUT/logs-<budget>/``); they run on a local pool of ``--workers``
processes or as Ray tasks (``--backend ray``), exactly as ``contenv sweep`` runs its trials: finished runs are skipped,
started ones resume from their checkpoints, failed ones are retried, and a run directory is
never overwritten. Then the report goes to ``OUT/report-<budget>/``: ``report.md`` (tables with
90 % bootstrap CIs, the verdict in plain words), ``results.json`` (the numbers) and the plots.

Studies: memory-load, cw-order, plasticity, distractor. Budgets: ``here`` (about an hour on
two cores, ``--workers 2``) and ``paper`` (the full protocol, for a GPU machine or a cluster).

Examples::

    contenv study plasticity --dry-run                  # the plan: every run and its command
    contenv study plasticity --workers 2                # run (or resume) it, then write the report
    contenv study cw-order --budget paper --backend ray --address auto --out /shared/studies/cw-order
    contenv study memory-load --report-only             # the report of what has finished
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from contenv.studies import STUDIES, get_study
from contenv.studies.common import BUDGETS, layout, load_study_runs, plan_lines, write_report
from contenv_cli import sweep

BACKENDS = ("local", "ray")


@dataclass
class StudyArgs:
    """Run a study of the suite and write its report."""

    name: Annotated[str, tyro.conf.Positional]
    """The study: memory-load, cw-order, plasticity or distractor."""
    budget: str = "here"
    """here (about an hour on 2 cores with --workers 2) or paper (the full protocol)."""
    backend: str = "local"
    """Where runs go: local (a pool of --workers processes) or ray (one Ray task each)."""
    address: Optional[str] = None
    """Ray cluster address (auto joins a running cluster); none starts a local Ray instance."""
    out: Optional[Path] = None
    """Root of the study's runs and reports (default: runs/studies/<name>)."""
    workers: int = 2
    """Concurrent runs of the local backend."""
    retries: int = 2
    """Times a failed run is resumed from its checkpoint before it counts as failed."""
    population_size: int = 16
    """Most runs of one method and cell trained together as one population (1: one process each). 16: the
    studies' here budgets train small agents, for which 16 members gave x2.76 the steps per second of
    separate runs (scripts/bench_population.py; docs/populations.md)."""
    dry_run: bool = False
    """Print the plan (every run, its state and its command) and run nothing."""
    report_only: bool = False
    """Write the report of the finished runs without running anything."""


def check(args: StudyArgs) -> None:
    """Clear errors that list what is allowed."""
    get_study(args.name)  # unknown study: ValueError listing the studies
    if args.budget not in BUDGETS:
        raise ValueError(f"unknown budget {args.budget!r}; budgets: {', '.join(BUDGETS)}")
    if args.backend not in BACKENDS:
        raise ValueError(f"unknown backend {args.backend!r}; backends: {', '.join(BACKENDS)}")
    if args.workers < 1 or args.retries < 0:
        raise ValueError(f"--workers must be >= 1 and --retries >= 0, got {args.workers} and {args.retries}")
    if args.population_size < 1:
        raise ValueError(f"--population-size must be >= 1 (1: one process per run), got {args.population_size}")


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(StudyArgs, args=argv, description=__doc__.splitlines()[0], prog="contenv study")
    try:
        check(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    study = get_study(args.name)
    out = args.out if args.out is not None else Path("runs/studies") / args.name
    runs_root, report_dir = (p.resolve() for p in layout(out, args.budget))
    specs = study.runs(args.budget)
    if args.dry_run:
        print("\n".join(plan_lines(study, args.budget, specs, runs_root, sweep.trial_state)))
        return 0
    started, failed = time.time(), 0
    if not args.report_only:
        trials = [sweep.Trial(spec.name, spec.run_dir(runs_root), spec.train_argv(runs_root)) for spec in specs]
        print(f"study {study.name}, budget {args.budget}: {len(trials)} runs under {runs_root} "
              f"({args.backend} backend); estimated wall time {study.budgets[args.budget].wall_time}", flush=True)
        options = sweep.SweepArgs(out=runs_root, backend=args.backend, address=args.address, workers=args.workers,
                                  retries=args.retries, population_size=args.population_size)
        runner = sweep.run_ray if args.backend == "ray" else sweep.run_local
        outcomes = runner(trials, options, out.resolve() / f"logs-{args.budget}")  # one log per run
        failed = sum(outcome.startswith("FAILED") for _, outcome in outcomes)
        for name, outcome in outcomes:
            if outcome.startswith("FAILED"):
                print(f"  {outcome} {name}", file=sys.stderr)
    found = load_study_runs(specs, runs_root)
    report_dir.mkdir(parents=True, exist_ok=True)
    analysis = study.analyse(found, args.budget, report_dir)
    seconds = None if args.report_only else time.time() - started
    path = write_report(study, args.budget, analysis, found, report_dir, seconds)
    print(f"{found.complete} of {found.expected} runs finished; report: {path}")
    print(f"verdict: {analysis.verdict}")
    return 1 if failed else 0


__all__ = ["StudyArgs", "STUDIES", "main", "check"]

if __name__ == "__main__":
    sys.exit(main())
