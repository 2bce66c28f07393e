"""What every study shares: its run list, loading those runs, estimates, and writing the report.

A study is data plus two functions (:class:`Study`): ``expand(budget)`` lists its runs as
:class:`RunSpec` (the ``contenv train`` arguments of each, minus seed and run directory), and
``analyse(runs, budget, out_dir)`` turns the finished runs into an :class:`Analysis`: tables
with 90 % bootstrap CIs, plots, verdicts (:mod:`contenv.studies.verdict`) and the numbers.
:func:`write_report` writes ``report.md`` and ``results.json`` next to the plots.

Layout under ``OUT``: ``OUT/runs/<budget>/<group>/<label>/seed<k>`` (one ``contenv train`` run
directory each; re-running a study skips the finished ones) and ``OUT/report-<budget>/``.

Example:
    >>> train_flags(steps_per_task=2000, tasks=("a", "b"), protection_kwargs={"fisher": "empirical"},
    ...             task_in_trunk=True, reset_optimizer=False, horizon=None)
    ('--steps-per-task', '2000', '--tasks', 'a', 'b', '--protection-kwargs', '{"fisher": "empirical"}', '--task-in-trunk', '--no-reset-optimizer')
    >>> spec = RunSpec("p=1,i=1", "ewc", 3, ("--protection", "ewc"))
    >>> spec.name, spec.run_dir(Path("out")).as_posix()
    ('p=1,i=1/ewc/seed3', 'out/p=1,i=1/ewc/seed3')
    >>> spec.train_argv(Path("out"))
    ('--protection', 'ewc', '--torch-threads', '1', '--no-progress-bar', '--seed', '3', '--run-dir', 'out/p=1,i=1/ewc/seed3')
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from contenv.evaluation import metrics
from contenv.evaluation.metrics import Estimate
from contenv.evaluation.rundir import Run, RunLoadError, atomic_write_json, load_run
from contenv.studies.verdict import Verdict, fmt

BUDGETS = ("here", "paper")
# Every run of a study: one torch thread, no progress bar (many runs share a machine and a log).
RUN_DEFAULTS = {"torch_threads": 1, "progress_bar": False}

__all__ = ["BUDGETS", "RUN_DEFAULTS", "train_flags", "RunSpec", "Budget", "Study", "Table", "Analysis", "StudyRuns",
           "check_budget", "layout", "load_study_runs", "stack_success", "mean_estimate", "estimate_of",
           "est_dict", "cell", "figure", "write_report", "plan_lines"]


def train_flags(**settings: Any) -> tuple[str, ...]:
    """``contenv train`` flags from keyword settings: ``None`` left out, booleans as
    ``--name`` / ``--no-name``, sequences spread, dicts as JSON."""
    flags: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value, sort_keys=True)]
        elif isinstance(value, (tuple, list)):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return tuple(flags)


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: what it measures (``group``), the method as the study names it
    (``label``), its seed and its ``contenv train`` arguments (without seed and run directory)."""

    group: str
    label: str
    seed: int
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.group}/{self.label}/seed{self.seed}"

    def run_dir(self, root: Path) -> Path:
        return Path(root) / self.group / self.label / f"seed{self.seed}"

    def train_argv(self, root: Path) -> tuple[str, ...]:
        """The full ``contenv train`` arguments of this run under ``root`` (with :data:`RUN_DEFAULTS`)."""
        return (*self.argv, *train_flags(**RUN_DEFAULTS), "--seed", str(self.seed), "--run-dir", str(self.run_dir(root)))


@dataclass(frozen=True)
class Budget:
    """A budget of a study: its seeds, what it costs (an estimate, with how it was made) and what to know."""

    seeds: tuple[int, ...]
    wall_time: str
    note: str = ""


@dataclass
class Table:
    """A markdown table: cells are already formatted (``"0.80 [0.79, 0.82]"``)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Analysis:
    """What a study found: the overall verdict, its parts, tables, plots, numbers and notes."""

    verdict: Verdict
    verdicts: list[Verdict]
    tables: list[Table | str]  # a Table, or markdown already rendered (e.g. a CW table)
    plots: list[Path] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    """A study: a claim from the literature, its budgets, its runs and its analysis."""

    name: str
    title: str
    claim: str
    budgets: Mapping[str, Budget]
    expand: Callable[[str], list[RunSpec]]
    analyse: Callable[["StudyRuns", str, Path], Analysis]

    def runs(self, budget: str) -> list[RunSpec]:
        check_budget(self, budget)
        return self.expand(budget)


def check_budget(study: Study, budget: str) -> None:
    """A clear error for a budget the study does not have."""
    if budget not in study.budgets:
        raise ValueError(f"unknown budget {budget!r} for study {study.name}; budgets: {', '.join(study.budgets)}")


def layout(out: Path, budget: str) -> tuple[Path, Path]:
    """``(runs root, report directory)`` of a study's budget under ``out``.

    Example:
        >>> [p.as_posix() for p in layout(Path("o"), "here")]
        ['o/runs/here', 'o/report-here']
    """
    return Path(out) / "runs" / budget, Path(out) / f"report-{budget}"


# --------------------------------------------------------------------------- runs


@dataclass
class StudyRuns:
    """The finished runs of a study, by ``(group, label)``, and what is missing or broken."""

    runs: dict[tuple[str, str], list[Run]]
    expected: int
    missing: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def get(self, group: str, label: str) -> list[Run]:
        return self.runs.get((group, label), [])

    @property
    def complete(self) -> int:
        return sum(len(v) for v in self.runs.values())

    def summary(self) -> dict[str, Any]:
        return {"expected": self.expected, "complete": self.complete, "missing": self.missing,
                "incomplete": self.incomplete, "errors": self.errors}


def load_study_runs(specs: Sequence[RunSpec], root: Path) -> StudyRuns:
    """Load every finished run of ``specs`` under ``root``; the others are listed, not raised."""
    found = StudyRuns({}, len(specs))
    for spec in specs:
        run_dir = spec.run_dir(root)
        if not (run_dir / "config.json").exists():
            found.missing.append(spec.name)
            continue
        try:
            run = load_run(run_dir)
        except RunLoadError as err:
            (found.incomplete if "progress.csv" in str(err.path) else found.errors).append(f"{spec.name}: {err.reason}")
            continue
        if not run.is_complete:
            last = int(run.steps[-1]) if len(run.steps) else 0
            found.incomplete.append(f"{spec.name}: last eval at step {last} of {run.total_steps}")
            continue
        found.runs.setdefault((spec.group, spec.label), []).append(run)
    return found


def stack_success(runs: Sequence[Run]) -> tuple[Tensor, Tensor, int]:
    """``(success [S, E, T], steps [E], steps_per_task)`` of runs that share an eval grid.

    Raises:
        ValueError: the runs' eval grids or protocols differ.
    """
    first = runs[0]
    for run in runs[1:]:
        if not torch.equal(run.steps, first.steps) or run.tasks != first.tasks:
            raise ValueError(f"runs {first.path} and {run.path} differ in eval steps or tasks")
    return torch.stack([r.stochastic for r in runs]), first.steps, first.steps_per_task


def mean_estimate(values: Tensor, seed: int = 0) -> Estimate:
    """Mean over seeds ``[S]`` with its 90 % bootstrap CI (CW's 4,000 resamples).

    Example:
        >>> [round(float(x), 2) for x in mean_estimate(torch.tensor([0.0, 1.0]))]
        [0.5, 0.0, 1.0]
    """
    return metrics.estimate([values.double()], lambda b: b.mean(1), seed=seed)


def estimate_of(samples: Sequence[Tensor], statistic: Callable[..., Tensor], seed: int = 0) -> Estimate:
    """A statistic of several independent per-seed samples (each resampled on its own) with its CI."""
    return metrics.estimate([s.double() for s in samples], statistic, seed=seed)


def est_dict(estimate: Any) -> dict[str, float | None]:
    """``{"value", "lo", "hi"}`` for JSON (NaN as null).

    Example:
        >>> est_dict((0.5, 0.25, float("nan")))
        {'value': 0.5, 'lo': 0.25, 'hi': None}
    """
    values = [float(x) for x in estimate]
    return {k: (v if math.isfinite(v) else None) for k, v in zip(("value", "lo", "hi"), values)}


def cell(estimate: Any) -> str:
    """A table cell: ``"0.80 [0.79, 0.82]"``, or ``n/a``."""
    if estimate is None or not all(math.isfinite(float(x)) for x in estimate):
        return "n/a"
    return fmt(estimate)


def figure(**kwargs: Any) -> Figure:
    """A figure on its own Agg canvas: no pyplot state, no display."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- the report


def plan_lines(study: Study, budget: str, specs: Sequence[RunSpec], root: Path,
               state: Callable[[Path], str]) -> list[str]:
    """What a study will run: its claim, budget, cost estimate and every run with its command."""
    lines = [f"study {study.name} ({study.title}), budget {budget}: {len(specs)} runs under {root}",
             f"claim: {study.claim}", f"wall time: {study.budgets[budget].wall_time}"]
    if study.budgets[budget].note:
        lines.append(f"note: {study.budgets[budget].note}")
    for spec in specs:
        lines.append(f"  {state(spec.run_dir(root)):8s} {spec.name}: contenv train {shlex.join(spec.train_argv(root))}")
    return lines


def write_report(study: Study, budget: str, analysis: Analysis, runs: StudyRuns, report_dir: Path,
                 wall_seconds: float | None = None) -> Path:
    """``report.md`` and ``results.json`` (the plots are already in ``report_dir``); returns the report."""
    report_dir.mkdir(parents=True, exist_ok=True)
    spent = "" if wall_seconds is None else f" This invocation ran for {wall_seconds / 60:.1f} min of wall time."
    lines = [f"# Study {study.name}: {study.title} (budget `{budget}`)", "",
             f"**Claim.** {study.claim}", "",
             f"**Verdict: {analysis.verdict.outcome}.** {analysis.verdict.reason}", "",
             f"Runs: {runs.complete} of {runs.expected} finished. Estimated wall time: "
             f"{study.budgets[budget].wall_time}.{spent}", ""]
    if study.budgets[budget].note:
        lines += [f"Budget note: {study.budgets[budget].note}", ""]
    lines += ["## Verdicts", ""] + [f"- **{v.outcome}**: {v.claim} ({v.reason})" for v in analysis.verdicts] + [""]
    lines += ["## Tables", "", "Cells: mean over seeds [90 % bootstrap CI over seeds, 4,000 resamples].", ""]
    for table in analysis.tables:
        lines += [table.markdown() if isinstance(table, Table) else table, ""]
    if analysis.plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in analysis.plots] + [""]
    problems = [("missing (not run yet)", runs.missing), ("incomplete (left out)", runs.incomplete),
                ("unreadable (left out)", runs.errors)]
    notes = analysis.notes + [f"{len(items)} runs {what}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                              for what, items in problems if items]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path = report_dir / "report.md"
    path.write_text("\n".join(lines))
    atomic_write_json(report_dir / "results.json", {
        "study": study.name, "budget": budget, "claim": study.claim, "verdict": analysis.verdict.as_dict(),
        "verdicts": [v.as_dict() for v in analysis.verdicts], "numbers": analysis.numbers,
        "runs": runs.summary(), "wall_time_estimate": study.budgets[budget].wall_time,
        "wall_seconds": wall_seconds, "plots": [p.name for p in analysis.plots], "notes": analysis.notes,
    })
    return path
