"""The Continual World table (performance, forgetting, forward transfer) of run directories.

    contenv report runs/cw20 --reference runs/reference --plots plots/cw20 --compare-published cw20

Every run directory (a directory with config.json) at or under the given paths is read;
runs are grouped by protocol (one table each: the task list actually trained, budget,
horizon) and by method plus every setting that may change results (one row each; rows
of one method with different settings are labelled with what differs). A seed twice in
one group is refused. Published rows appear only beside runs of their protocol. Broken,
incomplete or mismatched runs are listed on stderr with the file at fault and what is
wrong; the valid runs are still reported. Notes (missing references...) go to stderr too,
so stdout holds only the table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import tyro

from contenv.evaluation import metrics
from contenv.evaluation.report import (
    SHIPPED_MATRIX_NOTE,
    ReferenceSet,
    build_reports,
    published_notes,
    read_reference_csv,
    reference_from_runs,
    render,
    render_per_task,
    write_plots,
)
from contenv.evaluation.rundir import RunLoadError, load_runs


@dataclass
class Args:
    """Continual World table of run directories, with optional plots."""

    run_dirs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories, or directories containing them (searched recursively)."""
    reference: tuple[Path, ...] = ()
    """Single-task reference runs (directories) or a CSV of reference AUCs (columns task,auc[,steps_per_task], one row per reference run); needed for forward transfer."""
    format: Literal["md", "latex", "csv"] = "md"
    """Output format of the table."""
    plots: Optional[Path] = None
    """Directory for the plots (task curves, average performance, forgetting, transfer matrix) and per-task CSVs."""
    compare_published: Optional[Literal["cw20", "cw10"]] = None
    """Show the published CW20 (2021) or CW10 (2022) rows beside runs of that task list (with a note when budgets differ; they were run on Meta-World v1, and marked so)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the metrics and bootstrap run."""
    per_task: bool = False
    """Also print, per task: forgetting, forward transfer reached and the transfer target max_{j<i} FT(j, i)."""
    transfer_matrix: Optional[Path] = None
    """Transfer matrix CSV for targets and heatmaps (default: the shipped CW10 matrix of Continual World, measured on Meta-World v1; scenarios it does not cover get no heatmap)."""
    final_points: int = metrics.FINAL_POINTS
    """Eval points averaged for final and end-of-task values (Continual World: 5); at most the eval points of a task window."""


def check_args(args: Args) -> str | None:
    """The first problem with the options, or None (checked before anything is read or written)."""
    if not args.run_dirs:
        return "give at least one run directory"
    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda but no CUDA device is available"
    if args.final_points < 1:
        return f"--final-points must be at least 1, got {args.final_points}"
    if args.plots is not None and args.plots.exists() and not args.plots.is_dir():
        return f"--plots {args.plots} is a file; give a directory (it is created if missing)"
    if args.transfer_matrix is not None and not args.transfer_matrix.is_file():
        return f"--transfer-matrix {args.transfer_matrix}: no such file"
    return None


def load_reference(paths: tuple[Path, ...]) -> tuple[ReferenceSet | None, list[RunLoadError]]:
    """Reference AUCs from reference run directories and/or AUC CSV files."""
    if not paths:
        return None, []
    reference: ReferenceSet = {}
    errors: list[RunLoadError] = []
    for path in paths:
        if path.is_file():
            try:
                found = read_reference_csv(path)
            except RunLoadError as e:
                errors.append(e)
                continue
        else:
            runs, load_errors = load_runs([path])
            found, ref_errors = reference_from_runs(runs)
            errors += load_errors + ref_errors
        for key, values in found.items():
            reference.setdefault(key, []).extend(values)
    return reference, errors


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__, prog="contenv report")
    problem = check_args(args)
    if problem is None:
        try:
            matrix = metrics.load_transfer_matrix(args.transfer_matrix)
        except (OSError, ValueError, IndexError) as err:
            problem = f"--transfer-matrix {args.transfer_matrix}: not a transfer matrix CSV ({err})"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    matrix_source = (f"the transfer matrix {args.transfer_matrix}" if args.transfer_matrix is not None
                     else f"Continual World's CW10 transfer matrix ({SHIPPED_MATRIX_NOTE})")
    matrix_note = SHIPPED_MATRIX_NOTE if args.transfer_matrix is None else None  # the published one is v1

    runs, errors = load_runs(args.run_dirs)
    reference, ref_errors = load_reference(args.reference)
    reports, report_errors = build_reports(runs, reference, args.device, args.final_points)
    for error in errors + ref_errors + report_errors:
        print(f"error: {error}", file=sys.stderr)
    for report in reports:
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
    reports = [report for report in reports if report.methods]
    if not reports:
        print("error: no valid run to report", file=sys.stderr)
        return 1
    for note in published_notes(reports, args.compare_published):
        print(f"note: {note}", file=sys.stderr)
    print(render(reports, args.format, args.compare_published))
    if args.per_task:
        for report in reports:
            print()
            print(render_per_task(report, matrix, args.format, matrix_note))
    if args.plots is not None:
        written = write_plots(reports, args.plots, matrix, matrix_source)
        print(f"wrote {len(written)} files to {args.plots}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
