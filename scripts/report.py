"""The Continual World table (performance, forgetting, forward transfer) of run directories.

    python scripts/report.py runs/cw20 --reference runs/reference --plots plots/cw20 --compare-published cw20

Every run directory (a directory with config.json) at or under the given paths is read;
runs are grouped by scenario (one table each) and method (one row each). Broken,
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

from contenv import metrics
from contenv.report import (
    SHIPPED_MATRIX_NOTE,
    ReferenceSet,
    build_reports,
    read_reference_csv,
    reference_from_runs,
    render,
    render_per_task,
    write_plots,
)
from contenv.rundir import RunLoadError, load_runs


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
    """Append the published CW20 (2021) or CW10 (2022) rows for comparison (run on Meta-World v1; marked so)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the metrics and bootstrap run."""
    per_task: bool = False
    """Also print, per task: forgetting, forward transfer reached and the transfer target max_{j<i} FT(j, i)."""
    transfer_matrix: Optional[Path] = None
    """Transfer matrix CSV for targets and heatmaps (default: the shipped CW10 matrix, measured on Meta-World v1)."""
    final_points: int = metrics.FINAL_POINTS
    """Eval points averaged for final and end-of-task values (Continual World: 5)."""


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
    args = tyro.cli(Args, args=argv, description=__doc__)
    if not args.run_dirs:
        print("error: give at least one run directory", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2

    runs, errors = load_runs(args.run_dirs)
    reference, ref_errors = load_reference(args.reference)
    reports, report_errors = build_reports(runs, reference, args.device, args.final_points)
    for error in errors + ref_errors + report_errors:
        print(f"error: {error}", file=sys.stderr)
    for report in reports:
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
    if not reports:
        print("error: no valid run to report", file=sys.stderr)
        return 1

    matrix = metrics.load_transfer_matrix(args.transfer_matrix)
    matrix_note = SHIPPED_MATRIX_NOTE if args.transfer_matrix is None else None  # the published one is v1
    print(render(reports, args.format, args.compare_published))
    if args.per_task:
        for report in reports:
            print()
            print(render_per_task(report, matrix, args.format, matrix_note))
    if args.plots is not None:
        written = write_plots(reports, args.plots, matrix, matrix_note)
        print(f"wrote {len(written)} files to {args.plots}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
