"""Study ``memory-load``: does memory load, not sequence length, cost weight-importance methods?

Ehret, Henning, Cervera, Meulemans, von Oswald & Grewe, "Continual learning in recurrent
neural networks" (ICLR 2021), in RL. Each scenario is a sequence of copy tasks that differ
only in their answer mapping (a permutation of the four symbols, each a derangement of the
one before), on a grid of pattern length ``p`` (what must be held) and padding ``i``
(sequence length only): ``p`` grows with ``i`` fixed, ``i`` grows with ``p`` fixed, and the two
axes reach the same episode lengths (``2p + i``), so that load and length are told apart.

Agent: a GRU SAC with **one head that reads the task one-hot in its trunk**
(``--heads single --task-in-trunk``). With CW's one head per task the heads alone can absorb
a new answer mapping and the recurrent weights need not change (``scripts/bench_forgetting.py``
found that fine-tuning then hardly forgets), which would leave nothing for the importance
methods to protect. Methods: fine-tuning, EWC with Ehret et al.'s empirical Fisher and with
CW's closed form, online EWC, SI, the hypernetwork, PackNet and perfect-memory replay.

Measures per grid cell and method (each with a 90 % bootstrap CI over seeds): *during-training
performance*, the success of every task at the end of its own training (Ehret et al.'s "during
accuracy"; CW's end-of-task value), averaged over tasks, and *final performance* (CW's P).

Verdict: for every weight-importance method (EWC both forms, online EWC, SI) and both
measures, the drop along ``p`` (smallest minus largest ``p``) exceeds the drop along ``i``
(smallest minus largest ``i``): the difference of the drops has a CI above 0. And the
hypernetwork has the best final performance at the largest load. Holds only if every part
holds; fails if any part fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from contenv.evaluation import metrics
from contenv.studies.common import (
    Analysis,
    Budget,
    RunSpec,
    Study,
    StudyRuns,
    Table,
    cell,
    est_dict,
    estimate_of,
    figure,
    mean_estimate,
    stack_success,
    train_flags,
)
from contenv.studies.verdict import above_zero, best, combine
from contenv.tasks.registry import format_task_spec

# Answer mappings of the tasks, in order: each a derangement of the one before (every answer changes).
MAPPINGS = ("0123", "1032", "2301", "3210", "1302")
WEIGHT_IMPORTANCE = ("ewc-empirical", "ewc", "online-ewc", "si")
PROTECTOR = "hnet"
RECURRENT_BATCH = 2  # episodes per update of a recurrent agent by default (agents.sac.RECURRENT_BATCH; a test checks)


@dataclass(frozen=True)
class Grid:
    """``p`` in ``loads`` at padding ``padding``; ``i`` in ``paddings`` at load ``load``."""

    loads: tuple[int, ...]
    padding: int
    paddings: tuple[int, ...]
    load: int

    def p_axis(self) -> list[tuple[int, int]]:
        return [(p, self.padding) for p in self.loads]

    def i_axis(self) -> list[tuple[int, int]]:
        return [(self.load, i) for i in self.paddings]

    def cells(self) -> list[tuple[int, int]]:
        """Every distinct ``(p, i)``, the p axis first.

        Example:
            >>> Grid((1, 3), 1, (1, 5), 1).cells()
            [(1, 1), (3, 1), (1, 5)]
        """
        return list(dict.fromkeys(self.p_axis() + self.i_axis()))


def group(p: int, i: int) -> str:
    return f"p={p},i={i}"


def tasks(p: int, i: int, count: int) -> list[str]:
    """The copy tasks of one cell.

    Example:
        >>> tasks(2, 1, 2)
        ['copy(i=1,p=2)', "copy(i=1,mapping='1032',p=2)"]
    """
    return [format_task_spec("copy", {"p": p, "i": i, **({"mapping": m} if m != "0123" else {})})
            for m in MAPPINGS[:count]]


# Per budget: the grid, the schedule and agent shared by all runs, and the evaluation.
GRIDS = {"here": Grid(loads=(1, 3), padding=1, paddings=(1, 5), load=1),
         "paper": Grid(loads=(1, 2, 3, 4, 5), padding=5, paddings=(5, 7, 9, 11, 13), load=1)}
NUM_TASKS = {"here": 3, "paper": 5}
FINAL_POINTS = {"here": 3, "paper": 5}
AGENT = dict(agent="gru", heads="single", task_in_trunk=True, init_log_alpha=-3.0)
SCHEDULES = {
    # bench_forgetting's "short" GRU, which learns copy(p=1,i=1) in 2,000 steps; 16 whole episodes per update.
    # It does not learn p=3 at this budget: fine-tuning's during-training success there was 0.07 in the study, and
    # alone on copy(p=3,i=1) for 20,000 steps it reached 0.25-0.35 (seed 0; README, "Results"), so this budget
    # cannot test the claim (the drop along p is one of learnability, not protection).
    "here": dict(steps_per_task=2_000, hidden_sizes=(64, 64), rnn_size=32, batch_size=16, random_steps=500,
                 update_after=500, update_every=50, eval_every=250, eval_episodes=10, eval_deterministic_episodes=0,
                 checkpoint_every=1_000),
    # CopySeq's 200,000 steps per task, the recurrent defaults (GRU 128, 2 x 256, 2 episodes per update), CW's
    # exploration and schedule.
    "paper": dict(steps_per_task=200_000, random_steps=10_000, update_after=1_000, update_every=50,
                  eval_every=10_000, eval_episodes=10, eval_deterministic_episodes=0),
}
BUDGETS = {
    "here": Budget(
        seeds=(0, 1, 2),
        wall_time=("about 60 min with --workers 2 (estimate: 72 runs of 6,000 steps; "
                   "scripts/bench_forgetting.py measured 40-110 s for such a run and about 180 s with replay)"),
        note="2 points per axis (p = 1, 3 at i = 1; i = 1, 5 at p = 1; episode lengths 3 and 7), 3 tasks, "
             "3 seeds: a small-budget check of the design; the CIs are wide"),
    "paper": Budget(
        seeds=(0, 1, 2, 3, 4),
        wall_time=("about 360 runs of 1M steps: weeks of CPU time; for a GPU machine or a Ray cluster "
                   "(--backend ray)"),
        note="p = 1..5 at i = 5 and i = 5..13 at p = 1 (contenv/CopySeq-v0 and contenv/PaddedCopySeq-v0's "
             "lengths 7-15), 5 tasks as Ehret et al., 200,000 steps per task"),
}


def methods(budget: str) -> dict[str, dict]:
    """Study label -> the ``contenv train`` settings of its method at ``budget``."""
    schedule = SCHEDULES[budget]
    updates = schedule["steps_per_task"] - schedule["update_after"]
    batch = schedule.get("batch_size", RECURRENT_BATCH)
    return {
        "finetune": {"protection": "finetune"},
        "ewc-empirical": {"protection": "ewc", "protection_kwargs": {"fisher": "empirical"}},
        "ewc": {"protection": "ewc"},
        "online-ewc": {"protection": "online-ewc"},
        "si": {"protection": "si"},
        # hidden (32, 32): compression ratio 0.95 for the small actor (bench_forgetting's setting).
        "hnet": {"protection": "hnet", "protection_kwargs": {"hidden_sizes": [32, 32]} if budget == "here" else None},
        "packnet": {"protection": "packnet", "protection_kwargs": {"retrain_steps": max(1, updates // 10)}},
        # CW's perfect memory quadruples the batch (128 -> 512); the same ratio for episodes.
        "replay": {"protection": "replay", "protection_kwargs": {"batch_size": 4 * batch}},
    }


def expand(budget: str) -> list[RunSpec]:
    grid, seeds = GRIDS[budget], BUDGETS[budget].seeds
    specs = []
    for p, i in grid.cells():
        scenario = dict(scenario="contenv/Sequence-v0", tasks=tuple(tasks(p, i, NUM_TASKS[budget])))
        for label, method in methods(budget).items():
            argv = train_flags(**scenario, **AGENT, **SCHEDULES[budget], **method)
            specs += [RunSpec(group(p, i), label, seed, argv) for seed in seeds]
    return specs


# --------------------------------------------------------------------------- analysis


def per_seed(runs, final_points: int) -> dict[str, torch.Tensor]:
    """Per-seed ``during`` (mean end-of-task success), ``final`` (CW's P) and ``forgetting``."""
    success, steps, spt = stack_success(runs)
    return {"during": metrics.end_of_task_success(success, steps, spt, final_points).mean(-1),
            "final": metrics.average_performance(success, final_points),
            "forgetting": metrics.average_forgetting(success, steps, spt, final_points)}


def drop_difference(values: dict[tuple[int, int], torch.Tensor], grid: Grid) -> dict[str, object]:
    """Drop along p, drop along i and their difference, each with a CI (every cell's seeds
    resampled once, so a corner shared by both axes is the same resample in both)."""
    cells = list(dict.fromkeys([grid.p_axis()[0], grid.p_axis()[-1], grid.i_axis()[0], grid.i_axis()[-1]]))
    index = {c: k for k, c in enumerate(cells)}

    def drops(*resampled):
        mean = [r.mean(1) for r in resampled]
        along_p = mean[index[grid.p_axis()[0]]] - mean[index[grid.p_axis()[-1]]]
        along_i = mean[index[grid.i_axis()[0]]] - mean[index[grid.i_axis()[-1]]]
        return torch.stack([along_p, along_i, along_p - along_i], dim=-1)

    est = estimate_of([values[c] for c in cells], drops)
    parts = [metrics.Estimate(est.value[k], est.lo[k], est.hi[k]) for k in range(3)]
    return dict(zip(("drop_p", "drop_i", "difference"), parts))


def analyse(found: StudyRuns, budget: str, out: Path) -> Analysis:
    grid, final_points = GRIDS[budget], FINAL_POINTS[budget]
    labels = list(methods(budget))
    values: dict[str, dict[tuple[int, int], dict[str, torch.Tensor]]] = {}
    for label in labels:
        for p, i in grid.cells():
            runs = found.get(group(p, i), label)
            if runs:
                values.setdefault(label, {})[(p, i)] = per_seed(runs, final_points)
    estimates = {label: {c: {k: mean_estimate(v) for k, v in measures.items()} for c, measures in cells.items()}
                 for label, cells in values.items()}
    tables = [Table(f"{title} per cell (p = items held, i = padding)", ["method"] + [group(*c) for c in grid.cells()],
                    [[label] + [cell(estimates.get(label, {}).get(c, {}).get(measure)) for c in grid.cells()]
                     for label in labels])
              for measure, title in (("during", "During-training performance"), ("final", "Final performance"),
                                     ("forgetting", "Forgetting"))]

    verdicts, numbers = [], {"cells": {label: {group(*c): {k: est_dict(e) for k, e in m.items()}
                                               for c, m in cells.items()} for label, cells in estimates.items()}}
    needed = set(grid.p_axis() + grid.i_axis())
    drop_rows = []
    for label in WEIGHT_IMPORTANCE:
        for measure in ("during", "final"):
            claim = f"{label}: {measure} performance falls more as p grows than as i grows"
            cells = values.get(label, {})
            if not needed <= set(cells):
                verdicts.append(above_zero(claim, "drop(p) - drop(i)", (float("nan"),) * 3))
                continue
            parts = drop_difference({c: cells[c][measure] for c in needed}, grid)
            numbers.setdefault("drops", {}).setdefault(label, {})[measure] = {k: est_dict(e) for k, e in parts.items()}
            drop_rows.append([label, measure, cell(parts["drop_p"]), cell(parts["drop_i"]), cell(parts["difference"])])
            verdicts.append(above_zero(claim, "drop(p) - drop(i)", parts["difference"]))
    top = grid.p_axis()[-1]
    finals = {label: e[top]["final"] for label, e in estimates.items() if top in e}
    verdicts.append(best(f"{PROTECTOR} protects best: highest final performance at the largest load ({group(*top)})",
                         PROTECTOR, finals))
    p_lo, p_hi, i_lo, i_hi = grid.p_axis()[0], grid.p_axis()[-1], grid.i_axis()[0], grid.i_axis()[-1]
    tables.append(Table("Drops along each axis (weight-importance methods)",
                        ["method", "measure", f"drop along p ({group(*p_lo)} - {group(*p_hi)})",
                         f"drop along i ({group(*i_lo)} - {group(*i_hi)})", "difference"], drop_rows))
    plot = plot_axes(estimates, grid, labels, out / "memory_load_axes.png")
    verdict = combine("weight-importance methods lose during-training and final performance as p grows, not as i "
                      "grows, and the hypernetwork protects best", verdicts)
    return Analysis(verdict, verdicts, tables, [plot], numbers)


def plot_axes(estimates, grid: Grid, labels: list[str], path: Path) -> Path:
    """During-training and final performance against p (i fixed) and against i (p fixed), per method."""
    fig = figure(figsize=(10, 6.5))
    axes = fig.subplots(2, 2, sharey=True, squeeze=False)
    for row, measure in enumerate(("during", "final")):
        for col, (axis, cells, x_of) in enumerate((("p", grid.p_axis(), lambda c: c[0]),
                                                    ("i", grid.i_axis(), lambda c: c[1]))):
            ax = axes[row][col]
            for k, label in enumerate(labels):
                points = [(x_of(c), estimates[label][c][measure]) for c in cells if c in estimates.get(label, {})]
                if not points:
                    continue
                x = [pt[0] for pt in points]
                value = [float(pt[1].value) for pt in points]
                err = [[float(pt[1].value - pt[1].lo) for pt in points], [float(pt[1].hi - pt[1].value) for pt in points]]
                style = "-" if label in WEIGHT_IMPORTANCE else "--"
                ax.errorbar([v + 0.04 * (k - len(labels) / 2) for v in x], value, yerr=err, fmt="o" + style,
                            color=f"C{k % 10}", lw=1.2, ms=3, capsize=2, label=label if row == col == 0 else None)
            fixed = f"i = {grid.padding}" if axis == "p" else f"p = {grid.load}"
            ax.set(xlabel=f"{axis} ({fixed}; episode length 2p + i)", ylim=(-0.03, 1.03),
                   title=f"{measure} performance vs {axis}")
            ax.set_xticks(sorted({x_of(c) for c in cells}))
        axes[row][0].set_ylabel(f"{measure} performance")
    fig.suptitle("memory-load: mean over seeds, whiskers 90 % bootstrap CI "
                 "(solid: weight-importance methods)", fontsize=10)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    return path


STUDY = Study(
    name="memory-load",
    title="memory load vs sequence length (Ehret et al., ICLR 2021, in RL)",
    claim=("Weight-importance methods (EWC, online EWC, SI) lose during-training and final performance as the "
           "memory load p grows, not as the padded length i grows; the hypernetwork protects best (Ehret et al., "
           "'Continual learning in recurrent neural networks', ICLR 2021)."),
    budgets=BUDGETS,
    expand=expand,
    analyse=analyse,
)
