"""Continual World tables and plots from run directories.

Runs are grouped by protocol (one table each: task list, budget, horizon...) and, within
it, by method and every setting that may change results (one row each, seeds pooled;
see :func:`contenv.evaluation.rundir.group_by_method`). A group with a seed twice is refused.
Published rows are shown only beside runs of the published protocol (its task list),
with a note when the budgets differ. Every cell is a point estimate with its 90 % bootstrap CI over
seeds, ``"0.80 [0.79, 0.82]"``, computed by :mod:`contenv.evaluation.metrics`. Forward transfer
needs reference AUCs of single-task runs (:func:`reference_from_runs` or
:func:`read_reference_csv`); without them the column reads ``n/a``.

Example:
    >>> import torch
    >>> steps = torch.tensor([10, 20, 30, 40])
    >>> one = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    >>> result = method_result("ewc", one[None].repeat(3, 1, 1), steps, 20, final_points=1)
    >>> print(render_markdown([ScenarioReport("toy", ["a", "b"], 20, [result])]))
    ### toy
    <BLANKLINE>
    | method | seeds | performance | forgetting | forward transfer |
    |---|---|---|---|---|
    | ewc | 3 | 0.50 [0.50, 0.50] | 0.50 [0.50, 0.50] | n/a |
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from contenv.evaluation import metrics
from contenv.evaluation.metrics import Estimate
from contenv.evaluation.rundir import (
    PROGRESS_FILE,
    Run,
    RunLoadError,
    duplicate_seeds,
    group_by_method,
    group_by_scenario,
    task_list_label,
)

__all__ = [
    "Format",
    "METRICS",
    "HEADERS",
    "PUBLISHED_SOURCES",
    "PUBLISHED_LABELS",
    "PUBLISHED_NOTE",
    "SHIPPED_MATRIX_NOTE",
    "ReferenceSet",
    "MethodResult",
    "ScenarioReport",
    "method_result",
    "build_reports",
    "eval_points_per_window",
    "reference_from_runs",
    "read_reference_csv",
    "reference_matrix",
    "format_cell",
    "table_rows",
    "PUBLISHED_SCENARIOS",
    "published_protocol",
    "follows_published",
    "published_notes",
    "render_markdown",
    "render_latex",
    "render_csv",
    "render",
    "per_task_rows",
    "render_per_task",
    "COLORS",
    "BAND_NOTE",
    "PLOT_RESAMPLES",
    "plot_task_curves",
    "plot_average_performance",
    "plot_forgetting",
    "plot_transfer_matrix",
    "write_plots",
]

Format = Literal["md", "latex", "csv"]
METRICS = ("performance", "forgetting", "forward_transfer")
HEADERS = {"performance": "performance", "forgetting": "forgetting", "forward_transfer": "forward transfer"}
PUBLISHED_SOURCES = {
    "cw20": "published CW20 (Wolczyk et al. 2021), Meta-World v1",
    "cw10": "published CW10 (Wolczyk et al. 2022), Meta-World v1",
}
PUBLISHED_LABELS = {"cw20": "CW20 2021, published, Meta-World v1", "cw10": "CW10 2022, published, Meta-World v1"}
# The published tables and the shipped transfer matrix were run on Meta-World v1 (CW's pinned commit):
# 12-dim observations and v1 rewards. Our scenarios run v3 (39-dim observations, v2 rewards by default).
PUBLISHED_NOTE = ("rows marked Meta-World v1 come from the papers (12-dim observations, v1 rewards); "
                  "runs here use Meta-World v3 (39-dim observations, v2 rewards by default): "
                  "a different benchmark version, so compare orderings and gaps, not digits")
SHIPPED_MATRIX_NOTE = "shipped CW10 matrix, Meta-World v1"

# Reference AUCs: (task, steps_per_task or None when unknown) -> one AUC per reference run.
ReferenceSet = dict[tuple[str, "int | None"], list[float]]


# --------------------------------------------------------------------------- results


@dataclass
class MethodResult:
    """One method of one scenario: its metrics and the curves behind them."""

    method: str
    success: Tensor  # [S, E, T]
    steps: Tensor  # [E]
    metrics: dict[str, Estimate]
    run_paths: list[Path] = field(default_factory=list)

    @property
    def seeds(self) -> int:
        return int(self.success.shape[0])


@dataclass
class ScenarioReport:
    """All methods of one scenario, plus notes for the reader (missing references...)."""

    scenario: str
    tasks: list[str]
    steps_per_task: int
    methods: list[MethodResult]
    notes: list[str] = field(default_factory=list)


def method_result(
    method: str,
    success: Tensor,
    steps: Tensor,
    steps_per_task: int,
    ref_auc: Tensor | None = None,
    final_points: int = metrics.FINAL_POINTS,
    seed: int = 0,
) -> MethodResult:
    """Metrics of one method from its stacked success ``[S, E, T]`` (on its device).

    Example:
        >>> s = torch.ones(2, 3, 1, dtype=torch.float64)
        >>> method_result("m", s, torch.tensor([1, 2, 3]), 3).metrics["performance"].value.item()
        1.0
    """
    steps = steps.to(success.device)
    out = metrics.cw_metrics(success, steps, steps_per_task, ref_auc, final_points=final_points, seed=seed)
    return MethodResult(method, success, steps, out)


def _common_grid(runs: list[Run], method: str, errors: list[RunLoadError]) -> list[Run]:
    """Keep the runs that share the most common eval grid; the others become errors."""
    grids = Counter(tuple(run.steps.tolist()) for run in runs)
    best = grids.most_common(1)[0][0]
    kept = []
    for run in runs:
        if tuple(run.steps.tolist()) == best:
            kept.append(run)
        else:
            errors.append(
                RunLoadError(
                    run.path / PROGRESS_FILE,
                    f"eval steps differ from the other {method!r} runs "
                    f"({len(run.steps)} eval points vs {len(best)}); left out",
                )
            )
    return kept


def build_reports(
    runs: Iterable[Run],
    reference: ReferenceSet | None = None,
    device: str | torch.device = "cpu",
    final_points: int = metrics.FINAL_POINTS,
) -> tuple[list[ScenarioReport], list[RunLoadError]]:
    """Group runs by scenario and method and compute every metric on ``device``.

    Incomplete runs (still running, or killed) and runs whose eval grid differs from
    their method's other runs are left out and returned as errors.

    Example:
        >>> reports, errors = build_reports([])
        >>> reports, errors
        ([], [])
    """
    errors: list[RunLoadError] = []
    complete = []
    for run in runs:
        if run.is_complete:
            complete.append(run)
        else:
            last = int(run.steps[-1]) if len(run.steps) else 0
            errors.append(
                RunLoadError(
                    run.path / PROGRESS_FILE,
                    f"incomplete: last eval at step {last} of {run.total_steps} "
                    "(still running or killed?); left out",
                )
            )
    reports = []
    for scenario, scenario_runs in group_by_scenario(complete).items():
        first = scenario_runs[0]
        report = ScenarioReport(scenario, first.tasks, first.steps_per_task, [])
        ref_auc = None
        if reference is None:
            report.notes.append(f"{scenario}: forward transfer n/a (no --reference given)")
        else:
            ref_auc, note = reference_matrix(reference, first.tasks, first.steps_per_task)
            if note:
                report.notes.append(f"{scenario}: {note}")
        for method, method_runs in sorted(group_by_method(scenario_runs).items()):
            duplicates = duplicate_seeds(f"{scenario} / {method}", method_runs)
            if duplicates:
                errors += duplicates
                continue
            method_runs = _common_grid(method_runs, method, errors)
            available = eval_points_per_window(method_runs[0].steps, report.steps_per_task, len(report.tasks))
            if 0 < available < final_points:  # (no point at all: cw_metrics names the window below)
                errors += [RunLoadError(r.path / PROGRESS_FILE, f"final_points={final_points} needs that many eval "
                                        f"points in every task window; these runs have {available}; left out")
                           for r in method_runs]
                continue
            success = torch.stack([r.stochastic for r in method_runs]).to(device)
            ref = None if ref_auc is None else ref_auc.to(device)
            try:
                result = method_result(
                    method, success, method_runs[0].steps, report.steps_per_task, ref, final_points
                )
            except ValueError as e:  # e.g. an eval grid that leaves a task window empty
                errors += [RunLoadError(r.path / PROGRESS_FILE, f"{e}; left out") for r in method_runs]
                continue
            result.run_paths = [r.path for r in method_runs]
            report.methods.append(result)
        reports.append(report)
    return reports, errors


def eval_points_per_window(steps: Tensor, steps_per_task: int, num_tasks: int) -> int:
    """The fewest eval points any task's training window holds (what ``final_points`` may use).

    Example:
        >>> eval_points_per_window(torch.tensor([0, 10, 20, 30, 40]), 20, 2)
        2
    """
    return int(metrics.task_window_mask(steps, steps_per_task, num_tasks).sum(0).min())


# --------------------------------------------------------------------------- references


def reference_from_runs(runs: Iterable[Run]) -> tuple[ReferenceSet, list[RunLoadError]]:
    """AUC^b of single-task reference runs, keyed by (task, steps_per_task).

    Example:
        >>> import pandas as pd
        >>> run = Run(Path("r"), {}, pd.DataFrame(), ["a"], 2, torch.tensor([1, 2]),
        ...           torch.tensor([[0.5], [1.0]], dtype=torch.float64))
        >>> reference_from_runs([run])[0]
        {('a', 2): [0.75]}
    """
    found: ReferenceSet = {}
    errors: list[RunLoadError] = []
    for run in runs:
        if run.num_tasks != 1:
            errors.append(
                RunLoadError(run.path / "config.json", f"a reference run trains one task, this one {run.num_tasks}")
            )
            continue
        try:
            auc = metrics.reference_auc(run.stochastic[:, 0], run.steps, run.steps_per_task)
        except ValueError as e:
            errors.append(RunLoadError(run.path / PROGRESS_FILE, str(e)))
            continue
        found.setdefault((run.tasks[0], run.steps_per_task), []).append(float(auc))
    return found, errors


def read_reference_csv(path: str | Path) -> ReferenceSet:
    """Reference AUCs from a CSV with columns ``task,auc`` (one row per reference run)
    and optionally ``steps_per_task``.

    Raises:
        RunLoadError: naming the file and what is wrong.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "ref.csv"
        >>> _ = path.write_text("task,auc\\na,0.5\\na,0.7\\n")
        >>> read_reference_csv(path)
        {('a', None): [0.5, 0.7]}
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RunLoadError(path, f"cannot read reference CSV ({' '.join(str(e).split())})") from None
    missing = [c for c in ("task", "auc") if c not in frame.columns]
    if missing:
        raise RunLoadError(path, f"missing columns {missing} (expected task,auc[,steps_per_task])")
    auc = pd.to_numeric(frame["auc"], errors="coerce")
    if auc.isna().any() or ((auc < 0) | (auc > 1)).any():
        raise RunLoadError(path, "column 'auc' needs numbers in [0, 1]")
    has_spt = "steps_per_task" in frame.columns
    found: ReferenceSet = {}
    for k in range(len(frame)):
        spt = int(frame["steps_per_task"].iloc[k]) if has_spt else None
        found.setdefault((str(frame["task"].iloc[k]), spt), []).append(float(auc.iloc[k]))
    return found


def reference_matrix(
    reference: ReferenceSet, tasks: Sequence[str], steps_per_task: int
) -> tuple[Tensor | None, str | None]:
    """``[R, T]`` reference AUCs for a sequence (repeated tasks share a column), or None.

    Like Continual World, every task keeps the same number R of reference runs (the
    smallest count; extra runs are dropped, with a note) so whole rows resample together.

    Returns:
        ``(matrix or None, note or None)``.

    Example:
        >>> m, note = reference_matrix({("a", 5): [0.1, 0.3], ("b", None): [0.5]}, ["a", "b", "a"], 5)
        >>> m.tolist(), note
        ([[0.1, 0.5, 0.1]], 'reference runs cut to 1 per task (a: 2, b: 1) so every task has as many')
    """
    per_task: dict[str, list[float]] = {}
    missing = []
    for task in dict.fromkeys(tasks):
        values = reference.get((task, steps_per_task)) or reference.get((task, None))
        if values:
            per_task[task] = values
        else:
            missing.append(task)
    if missing:
        budgets = sorted({spt for (t, spt) in reference if t in missing and spt is not None})
        hint = f" (found only with steps_per_task {budgets})" if budgets else ""
        return None, (
            f"forward transfer n/a: no reference for {', '.join(missing)} at {steps_per_task} steps/task{hint}"
        )
    counts = {task: len(v) for task, v in per_task.items()}
    r = min(counts.values())
    note = None
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{t}: {c}" for t, c in counts.items())
        note = f"reference runs cut to {r} per task ({listing}) so every task has as many"
    columns = [per_task[task][:r] for task in tasks]
    return torch.tensor(columns, dtype=torch.float64).T.contiguous(), note


# --------------------------------------------------------------------------- tables


def format_cell(est: Estimate | None, digits: int = 2) -> str:
    """``"0.80 [0.79, 0.82]"``; ``"n/a"`` when missing.

    Example:
        >>> format_cell(Estimate(torch.tensor(0.804), torch.tensor(0.79), torch.tensor(0.8249)))
        '0.80 [0.79, 0.82]'
    """
    if est is None or not math.isfinite(float(est.value)):
        return "n/a"
    v, lo, hi = (float(x) for x in est)
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table_rows(
    reports: Sequence[ScenarioReport], compare_published: Literal["cw20", "cw10"] | None = None
) -> pd.DataFrame:
    """One row per (scenario, method), in the column layout of the published CSVs
    (``method, performance, performance_lo, performance_hi, ...``) plus ``scenario``,
    ``seeds`` and ``source``; NaN where a metric is not available.

    Example:
        >>> table_rows([], compare_published="cw20").iloc[0][["method", "performance", "source"]].tolist()
        ['fine-tuning', 0.05, 'published CW20 (Wolczyk et al. 2021), Meta-World v1']
    """
    records = []
    for report in reports:
        for result in report.methods:
            record = {"scenario": report.scenario, "method": result.method, "seeds": result.seeds}
            for name in METRICS:
                est = result.metrics.get(name)
                for suffix, k in (("", 0), ("_lo", 1), ("_hi", 2)):
                    record[name + suffix] = float(est[k]) if est is not None else float("nan")
            record["source"] = "runs"
            records.append(record)
    columns = ["scenario", "method", "seeds"] + [m + s for m in METRICS for s in ("", "_lo", "_hi")] + ["source"]
    table = pd.DataFrame(records, columns=columns)
    if compare_published:
        published = metrics.load_published_results(compare_published)
        published["source"] = PUBLISHED_SOURCES[compare_published]
        published["scenario"] = compare_published.upper() + " (published)"
        table = pd.concat([table, published.reindex(columns=columns)], ignore_index=True)
    table["seeds"] = table["seeds"].astype("Int64")  # stays an integer column next to NaN
    return table


def _cells(table: pd.DataFrame) -> list[list[str]]:
    labels = {PUBLISHED_SOURCES[k]: v for k, v in PUBLISHED_LABELS.items()}
    rows = []
    for _, row in table.iterrows():
        name = str(row["method"])
        if row["source"] in labels:
            name += f" ({labels[row['source']]})"
        seeds = "-" if pd.isna(row["seeds"]) else str(int(row["seeds"]))
        cells = [name, seeds]
        for m in METRICS:
            est = Estimate(*(torch.tensor(float(row[m + s])) for s in ("", "_lo", "_hi")))
            cells.append(format_cell(est))
        rows.append(cells)
    return rows


PUBLISHED_SCENARIOS = {"cw20": "contenv/CW20-v0", "cw10": "contenv/CW10-v0"}


def published_protocol(name: str) -> tuple[list[str], int]:
    """The task list and steps per task of a published table's protocol.

    Example:
        >>> tasks, steps = published_protocol("cw10")
        >>> len(tasks), tasks[0], steps
        (10, 'hammer-v3', 1000000)
    """
    from scenarios import load_scenarios

    kwargs = load_scenarios()[PUBLISHED_SCENARIOS[name]].kwargs
    return list(kwargs["tasks"]), int(kwargs["steps_per_task"])


def follows_published(report: ScenarioReport, name: str) -> bool:
    """Whether a scenario's runs trained the published protocol's task list (any budget)."""
    return list(report.tasks) == published_protocol(name)[0]


def published_notes(reports: Sequence[ScenarioReport], compare_published: str | None) -> list[str]:
    """What a reader must know about the published rows: shown beside which runs, and budgets.

    Example:
        >>> published_notes([ScenarioReport("toy", ["a"], 10, [])], "cw10")[0]
        'no run trains the CW10 task list (contenv/CW10-v0); the published rows are shown on their own'
    """
    if not compare_published:
        return []
    tasks, steps = published_protocol(compare_published)
    matching = [r for r in reports if follows_published(r, compare_published)]
    label = compare_published.upper()
    if not matching:
        return [f"no run trains the {label} task list ({PUBLISHED_SCENARIOS[compare_published]}); "
                "the published rows are shown on their own"]
    return [f"{r.scenario}: trained {r.steps_per_task:,} steps/task, the published {label} rows {steps:,}: "
            "budgets differ, the numbers are not directly comparable"
            for r in matching if r.steps_per_task != steps]


def _sections(reports: Sequence[ScenarioReport], compare_published) -> list[tuple[str, pd.DataFrame]]:
    table = table_rows(reports, compare_published)
    published = table[table["source"] != "runs"]
    sections = []
    shown = False
    for report in reports:
        own = table[(table["source"] == "runs") & (table["scenario"] == report.scenario)]
        if len(published) and follows_published(report, compare_published):
            own, shown = pd.concat([own, published]), True
        sections.append((report.scenario, own))
    if len(published) and not shown:
        sections.append((str(published["scenario"].iloc[0]), published))
    return sections


def render_markdown(
    reports: Sequence[ScenarioReport], compare_published: Literal["cw20", "cw10"] | None = None
) -> str:
    """One markdown table per scenario (published rows appended to each)."""
    header = ["method", "seeds"] + [HEADERS[m] for m in METRICS]
    blocks = []
    for scenario, table in _sections(reports, compare_published):
        lines = [f"### {scenario}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in _cells(table)]
        if (table["source"] != "runs").any():
            lines.append("| note: " + PUBLISHED_NOTE + " |" + " |" * (len(header) - 1))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


_LATEX_SPECIAL = re.compile(r"([&%$#_{}])")


def _latex_escape(text: str) -> str:
    return _LATEX_SPECIAL.sub(r"\\\1", text).replace("~", r"\textasciitilde{}")


def render_latex(
    reports: Sequence[ScenarioReport], compare_published: Literal["cw20", "cw10"] | None = None
) -> str:
    """One booktabs ``tabular`` per scenario.

    Example:
        >>> print(render_latex([], "cw10").splitlines()[3])
        method & seeds & performance & forgetting & forward transfer \\\\
    """
    blocks = []
    for scenario, table in _sections(reports, compare_published):
        lines = [
            f"% {_latex_escape(scenario)}",
            r"\begin{tabular}{lrlll}",
            r"\toprule",
            " & ".join(["method", "seeds"] + [HEADERS[m] for m in METRICS]) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(_latex_escape(c) for c in cells) + r" \\" for cells in _cells(table)]
        if (table["source"] != "runs").any():
            lines += [r"\midrule", r"\multicolumn{5}{p{0.9\linewidth}}{\footnotesize Note: "
                      + _latex_escape(PUBLISHED_NOTE) + r".} \\"]
        lines += [r"\bottomrule", r"\end{tabular}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_csv(
    reports: Sequence[ScenarioReport], compare_published: Literal["cw20", "cw10"] | None = None
) -> str:
    """All scenarios in one CSV (:func:`table_rows`), 4 decimals, empty where n/a."""
    return table_rows(reports, compare_published).to_csv(index=False, float_format="%.4f")


def render(
    reports: Sequence[ScenarioReport],
    fmt: Format = "md",
    compare_published: Literal["cw20", "cw10"] | None = None,
) -> str:
    """The table in ``fmt``: ``md``, ``latex`` or ``csv``."""
    renderers = {"md": render_markdown, "latex": render_latex, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(renderers)}")
    return renderers[fmt](reports, compare_published).rstrip("\n")


def per_task_rows(
    report: ScenarioReport, matrix: tuple[list[str], Tensor] | None = None
) -> pd.DataFrame:
    """Per position and method: forgetting, forward transfer reached, and the transfer
    target ``max_{j<i} FT(j, i)`` of the transfer matrix with its best source (for
    distractor sequences A -> B -> C: does C reach what A offers?).

    Example:
        >>> s = torch.ones(2, 2, 2, dtype=torch.float64)
        >>> r = method_result("m", s, torch.tensor([1, 2]), 1)
        >>> rows = per_task_rows(ScenarioReport("x", ["a", "b"], 1, [r]),
        ...                      (["a", "b"], torch.tensor([[0.0, 0.4], [0.1, 0.0]], dtype=torch.float64)))
        >>> rows[["task", "transfer_target", "target_source"]].values.tolist()
        [['a', nan, ''], ['b', 0.4, 'a']]
    """
    targets = sources = None
    if matrix is not None:
        try:
            seq = metrics.sequence_transfer_matrix(matrix[1], matrix[0], report.tasks)
            targets, sources = metrics.transfer_targets(seq)
        except KeyError:
            pass
    records = []
    for result in report.methods:
        for i, task in enumerate(report.tasks):
            record = {"scenario": report.scenario, "method": result.method, "position": i, "task": task}
            for name in ("forgetting_per_task", "forward_transfer_per_task"):
                est = result.metrics.get(name)
                key = name.removesuffix("_per_task")
                for suffix, k in (("", 0), ("_lo", 1), ("_hi", 2)):
                    record[key + suffix] = float(est[k][i]) if est is not None else float("nan")
            record["transfer_target"] = float(targets[i]) if targets is not None else float("nan")
            j = int(sources[i]) if sources is not None else -1
            record["target_source"] = report.tasks[j] if j >= 0 else ""
            records.append(record)
    return pd.DataFrame(records)


def render_per_task(report: ScenarioReport, matrix: tuple[list[str], Tensor] | None, fmt: Format,
                    matrix_note: str | None = None) -> str:
    """:func:`per_task_rows` as a table in ``fmt``; ``matrix_note`` (e.g.
    :data:`SHIPPED_MATRIX_NOTE`) says where the transfer targets come from, in the header."""
    rows = per_task_rows(report, matrix)
    if fmt == "csv":
        if matrix_note:
            rows["transfer_target_matrix"] = matrix_note
        return rows.to_csv(index=False, float_format="%.4f").rstrip("\n")
    target_header = "transfer target (source)" + (f" [{matrix_note}]" if matrix_note else "")
    header = ["method", "#", "task", "forgetting", "forward transfer", target_header]
    body = []
    for _, r in rows.iterrows():
        ests = [Estimate(*(torch.tensor(float(r[m + s])) for s in ("", "_lo", "_hi"))) for m in ("forgetting", "forward_transfer")]
        target = "n/a" if math.isnan(r["transfer_target"]) else f"{r['transfer_target']:.2f} ({r['target_source']})"
        body.append([str(r["method"]), str(r["position"]), str(r["task"]), *map(format_cell, ests), target])
    if fmt == "latex":
        lines = [r"\begin{tabular}{lrllll}", r"\toprule", " & ".join(header).replace("#", r"\#") + r" \\", r"\midrule"]
        lines += [" & ".join(_latex_escape(c) for c in cells) + r" \\" for cells in body]
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"])
    lines = [f"#### {report.scenario}: per task", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


# --------------------------------------------------------------------------- plots

COLORS = [f"C{k}" for k in range(10)]


def _figure(**kwargs) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, no display needed."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _step_scale(total_steps: int) -> tuple[float, str]:
    if total_steps >= 2_000_000:
        return 1e6, "env steps (millions)"
    if total_steps >= 2_000:
        return 1e3, "env steps (thousands)"
    return 1.0, "env steps"


BAND_NOTE = "line: mean over seeds, band: 90 % bootstrap CI of that mean"
PLOT_RESAMPLES = 1000  # bands only need to look right; the table uses the full 4000


def _mean_band(curves: Tensor, max_points: int) -> tuple[np.ndarray, ...]:
    """Thinned eval indices, mean over seeds and its 90 % bootstrap band, for ``[S, E, ...]``.

    At most ``max_points`` eval points are kept (evenly spread, both ends included): a
    subplot is a few hundred pixels wide, and the bootstrap costs per point.
    """
    n = curves.shape[1]
    keep = torch.unique(torch.linspace(0, n - 1, min(n, max_points)).round().long())
    curves = curves[:, keep.to(curves.device)]
    lo, hi = metrics.bootstrap_mean_ci(curves, num_resamples=PLOT_RESAMPLES)
    return tuple(t.double().cpu().numpy() for t in (keep, curves.mean(0), lo, hi))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "scenario"


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 5)
    return math.ceil(n / cols), cols


def plot_task_curves(report: ScenarioReport, path: str | Path) -> Path:
    """One subplot per position: success of every method over time (mean over seeds,
    90 % bootstrap band), the task's own training window shaded, boundaries dashed."""
    tasks, spt = report.tasks, report.steps_per_task
    rows, cols = _grid(len(tasks))
    scale, xlabel = _step_scale(len(tasks) * spt)
    fig = _figure(figsize=(3.2 * cols, 2.4 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    bands = [_mean_band(result.success, max_points=300) for result in report.methods]
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        ax.axvspan(i * spt / scale, (i + 1) * spt / scale, color="0.9", zorder=0)
        for k in range(1, len(tasks)):
            ax.axvline(k * spt / scale, color="0.75", lw=0.5, ls="--", zorder=1)
        for m, result in enumerate(report.methods):
            keep, mean, lo, hi = bands[m]
            x = result.steps.cpu().numpy()[keep.astype(int)] / scale
            mean, lo, hi = mean[:, i], lo[:, i], hi[:, i]
            color = COLORS[m % len(COLORS)]
            ax.fill_between(x, lo, hi, color=color, alpha=0.25, lw=0)
            ax.plot(x, mean, color=color, lw=1.2, label=f"{result.method} ({result.seeds} seeds)" if i == 0 else None)
        ax.set_title(f"{i}: {task}", fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.tick_params(labelsize=8)
    for j in range(len(tasks), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel("success rate", fontsize=9)
    fig.suptitle(f"{report.scenario}: success per task (grey: the task's training window)\n{BAND_NOTE}", fontsize=10)
    if report.methods:
        fig.legend(loc="outside right upper", fontsize=8, frameon=False, title="method", title_fontsize=8)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_average_performance(report: ScenarioReport, path: str | Path) -> Path:
    """Mean success over all tasks through training, per method, with the 90 % band."""
    spt, n = report.steps_per_task, len(report.tasks)
    scale, xlabel = _step_scale(n * spt)
    fig = _figure(figsize=(7, 3.6))
    ax = fig.subplots()
    for k in range(1, n):
        ax.axvline(k * spt / scale, color="0.8", lw=0.5, ls="--")
    for m, result in enumerate(report.methods):
        keep, mean, lo, hi = _mean_band(result.success.mean(-1), max_points=800)
        x = result.steps.cpu().numpy()[keep.astype(int)] / scale
        color = COLORS[m % len(COLORS)]
        ax.fill_between(x, lo, hi, color=color, alpha=0.25, lw=0)
        ax.plot(x, mean, color=color, lw=1.4, label=f"{result.method} ({result.seeds} seeds)")
    ax.set(xlabel=xlabel, ylabel="average success", ylim=(-0.03, 1.03),
           title=f"{report.scenario}: average performance\n{BAND_NOTE}")
    if report.methods:
        ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_forgetting(report: ScenarioReport, path: str | Path) -> Path:
    """Forgetting per position: one bar per method with its 90 % bootstrap CI."""
    tasks = report.tasks
    n_methods = max(len(report.methods), 1)
    width = 0.8 / n_methods
    fig = _figure(figsize=(max(6.0, 0.55 * len(tasks) * max(1, n_methods / 2) + 2), 4.2))
    ax = fig.subplots()
    x = np.arange(len(tasks))
    for m, result in enumerate(report.methods):
        est = result.metrics["forgetting_per_task"]
        value, lo, hi = (t.double().cpu().numpy() for t in est)
        err = np.stack([value - lo, hi - value])
        ax.bar(x + (m - (n_methods - 1) / 2) * width, value, width, yerr=err, capsize=2,
               color=COLORS[m % len(COLORS)], label=result.method, error_kw={"lw": 0.8})
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xticks(x, [f"{i}: {t}" for i, t in enumerate(tasks)], rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="forgetting (end of task - final)",
           title=f"{report.scenario}: forgetting per task\nbar: mean over seeds, whisker: 90 % bootstrap CI of that mean")
    if report.methods:
        ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_transfer_matrix(names: Sequence[str], matrix: Tensor, path: str | Path, title: str = "") -> Path:
    """Heatmap of FT(source -> target), every cell annotated (rows = trained first)."""
    values = matrix.double().cpu().numpy()
    n = len(names)
    size = max(5.0, 0.62 * n + 2.0)
    fig = _figure(figsize=(size + 1.0, size))
    ax = fig.subplots()
    bound = max(float(np.abs(values).max()), 1e-6)
    image = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(0.0, -bound, bound))
    fontsize = 8 if n <= 12 else 6
    for r in range(n):
        for c in range(n):
            v = values[r, c]
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if abs(v) > 0.6 * bound else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("target (trained second)")
    ax.set_ylabel("source (trained first)")
    ax.set_title(title or "forward transfer FT(source → target)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="FT")
    fig.savefig(path, dpi=110)
    return Path(path)


def write_plots(
    reports: Sequence[ScenarioReport], out_dir: str | Path, matrix: tuple[list[str], Tensor] | None = None,
    matrix_source: str = "the shipped CW10 transfer matrix",
) -> list[Path]:
    """Every plot of every scenario into ``out_dir``; the transfer heatmap of the
    scenario's distinct tasks when they are all in ``matrix`` (its title names
    ``matrix_source``; no heatmap for a scenario the matrix does not cover). Also writes
    ``<scenario>_per_task.csv``.

    Raises:
        ValueError: ``out_dir`` exists and is not a directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"plots directory {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for report in reports:
        slug = _slug(report.scenario)
        written.append(plot_task_curves(report, out / f"{slug}_task_curves.png"))
        written.append(plot_average_performance(report, out / f"{slug}_average_performance.png"))
        written.append(plot_forgetting(report, out / f"{slug}_forgetting.png"))
        per_task = out / f"{slug}_per_task.csv"
        per_task_rows(report, matrix).to_csv(per_task, index=False, float_format="%.4f")
        written.append(per_task)
        if matrix is not None:
            distinct = list(dict.fromkeys(report.tasks))
            try:
                sub = metrics.sequence_transfer_matrix(matrix[1], matrix[0], distinct)
                rt = float(metrics.reference_transfer(metrics.sequence_transfer_matrix(matrix[1], matrix[0], report.tasks)))
                title = (f"{report.scenario}: forward transfer FT(source → target), RT = {rt:.3f}\n"
                         f"from {matrix_source}, not from these runs")
                written.append(plot_transfer_matrix(distinct, sub, out / f"{slug}_transfer_matrix.png", title))
            except KeyError:  # the matrix does not cover these tasks: no heatmap rather than another one's
                pass
    return written
