"""Study ``distractor``: does the transfer A offers C survive an unrelated B in between?

The distractor question of Continual World's follow-up (Wolczyk et al., "Disentangling transfer in
continual reinforcement learning", NeurIPS 2022): in A -> B -> C, A is a useful source for C and
B is not. Per method, compare the forward transfer reached on C with

- the **target** FT(A -> C): C trained right after A (the pair [A, C], fine-tuning), what C
  would gain if nothing came between;
- the **floor** FT(B -> C): the pair [B, C], what B alone gives C.

Both pairs and the triplet use the same schedule, and FT is Continual World's, against
single-task reference runs of C (plain SAC). A method keeps A's transfer when FT on C reaches
the target and stands clear of the floor (:func:`contenv.studies.verdict.reaches`).

Scenarios: ``--budget here`` runs ``contenv/MemoryDistractor-v0`` (A = C = ``copy(p=2, i=4)``,
B the same inputs with the conflicting answer mapping ``1032``; GRU agent), where B teaches the
same memory skill as A, so the floor may be as high as the target: the verdict then says the
sequence cannot tell them apart. ``--budget paper`` runs ``contenv/Distractor-v0`` (the top
triplet of the CW10 transfer matrix: push -> handle-press-side -> peg-unplug-side; MLP agent,
CW's 1M steps per task); the shipped matrix's values (Meta-World v1) are quoted beside the
measured ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from contenv.distractors import load_transfer_matrix, memory_distractor_triplet, rank_triplets
from contenv.evaluation import metrics, report
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
    stack_success,
    train_flags,
)
from contenv.studies.verdict import combine, reaches

TRIPLET, PAIR_AC, PAIR_BC, REFERENCE = "triplet", "pair-A-C", "pair-B-C", "reference-C"
SCENARIOS = {"here": "contenv/MemoryDistractor-v0", "paper": "contenv/Distractor-v0"}
FINAL_POINTS = {"here": 3, "paper": 5}
SCHEDULES = {
    # memory-load's `here` GRU, 3,000 steps per task (copy(p=2, i=4) has 8-step episodes).
    "here": dict(agent="gru", hidden_sizes=(64, 64), rnn_size=32, batch_size=16, random_steps=500, update_after=500,
                 update_every=50, init_log_alpha=-3.0, steps_per_task=3_000, eval_every=250, eval_episodes=10,
                 eval_deterministic_episodes=0, checkpoint_every=1_000),
    "paper": dict(agent="mlp", steps_per_task=1_000_000),  # CW's agent, schedule and evaluation
}
BUDGETS = {
    "here": Budget(
        seeds=(0, 1, 2, 3, 4),
        wall_time=("about 40 min with --workers 2 (estimate: 25 triplet runs of 9,000 steps, 10 pair runs of 6,000 "
                   "and 5 reference runs of 3,000 at about 80 GRU steps/s, bench_forgetting's rate; replay slower)"),
        note="contenv/MemoryDistractor-v0 at 3,000 steps per task (registered: 200,000)"),
    "paper": Budget(
        seeds=(0, 1, 2, 3, 4),
        wall_time="40 runs of 1-3M Meta-World steps (CW rate: about 38 h per 1M steps on a 2-core slot): a Ray cluster",
        note="contenv/Distractor-v0 rank 0 (push, handle-press-side, peg-unplug-side) at CW's 1M steps per task"),
}


def triplet(budget: str) -> list[str]:
    """A, B, C of the budget's scenario.

    Example:
        >>> triplet("paper")
        ['push-v3', 'handle-press-side-v3', 'peg-unplug-side-v3']
    """
    return memory_distractor_triplet("copy") if budget == "here" else rank_triplets()[0].tasks


def methods(budget: str) -> dict[str, dict]:
    schedule = SCHEDULES[budget]
    updates = schedule["steps_per_task"] - schedule.get("update_after", 1_000)
    batch = schedule.get("batch_size", 128)
    return {
        "finetune": {"protection": "finetune"},
        "ewc": {"protection": "ewc"},
        "packnet": {"protection": "packnet", "protection_kwargs": {"retrain_steps": max(1, updates // 10)}},
        "hnet": {"protection": "hnet", "protection_kwargs": {"hidden_sizes": [32, 32]} if budget == "here" else None},
        # perfect memory; for GRU episodes, CW's 4x batch
        "replay": {"protection": "replay", "protection_kwargs": {"batch_size": 4 * batch} if budget == "here" else None},
    }


def expand(budget: str) -> list[RunSpec]:
    seeds, schedule = BUDGETS[budget].seeds, SCHEDULES[budget]
    a, b, c = triplet(budget)
    specs = [RunSpec(TRIPLET, label, seed, train_flags(scenario=SCENARIOS[budget], **schedule, **method))
             for label, method in methods(budget).items() for seed in seeds]
    for group, tasks in ((PAIR_AC, (a, c)), (PAIR_BC, (b, c)), (REFERENCE, (c,))):
        argv = train_flags(scenario="contenv/Sequence-v0", tasks=tasks, **schedule)
        specs += [RunSpec(group, "finetune", seed, argv) for seed in seeds]
    return specs


# --------------------------------------------------------------------------- analysis


def transfer_on_last(runs, ref_auc: torch.Tensor) -> metrics.Estimate:
    """CW's FT of the last position (AUC of its window against the reference AUC^b), with its CI
    (CL seeds and reference seeds resampled independently)."""
    success, steps, spt = stack_success(runs)
    auc = metrics.task_auc(success, steps, spt)[:, -1:]  # [S, 1]
    return estimate_of([auc, ref_auc[:, None]], lambda cl, ref: metrics.forward_transfer_per_task(cl, ref)[..., 0])


def analyse(found: StudyRuns, budget: str, out: Path) -> Analysis:
    a, b, c = triplet(budget)
    nan = metrics.Estimate(*(torch.tensor(float("nan")),) * 3)
    reference, _ = report.reference_from_runs(found.get(REFERENCE, "finetune"))
    values = [auc for (task, _), aucs in reference.items() if task == c for auc in aucs]
    notes = [] if values else ["forward transfer n/a: no finished reference run of C"]
    ref_auc = torch.tensor(values, dtype=torch.float64)

    def ft(group: str, label: str) -> metrics.Estimate:
        runs = found.get(group, label)
        return transfer_on_last(runs, ref_auc) if runs and values else nan

    target, floor = ft(PAIR_AC, "finetune"), ft(PAIR_BC, "finetune")
    numbers = {"target_ft_a_c": est_dict(target), "floor_ft_b_c": est_dict(floor), "methods": {}}
    if budget == "paper":
        matrix = load_transfer_matrix()
        shipped = {"FT(A->C)": matrix.ft(*(t.removesuffix("-v3") for t in (a, c))),
                   "FT(B->C)": matrix.ft(*(t.removesuffix("-v3") for t in (b, c)))}
        numbers["shipped_matrix_meta_world_v1"] = shipped
        notes.append("shipped CW10 matrix (Meta-World v1): " + ", ".join(f"{k} = {v:.2f}" for k, v in shipped.items()))
    verdicts, rows, results = [], [], {}
    for label in methods(budget):
        reached = ft(TRIPLET, label)
        results[label] = reached
        numbers["methods"][label] = est_dict(reached)
        check = reaches(f"{label}: C keeps the transfer A offers despite B", "FT on C", reached, "FT(A->C)", target,
                        "FT(B->C)", floor)
        verdicts.append(check)
        rows.append([label, str(len(found.get(TRIPLET, label))), cell(reached), cell(target), cell(floor),
                     check.outcome])
    tables: list = [Table(f"Forward transfer on C in {a} -> {b} -> {c}", ["method", "seeds", "FT on C",
                                                                          "target FT(A->C)", "floor FT(B->C)",
                                                                          "verdict"], rows)]
    cw, spt = [], 0
    for label in methods(budget):
        runs = found.get(TRIPLET, label)
        if runs:
            success, steps, spt = stack_success(runs)
            cw.append(report.method_result(label, success, steps, spt, final_points=FINAL_POINTS[budget]))
    if cw:  # performance and forgetting of the triplet (no reference for A and B: FT n/a there)
        tables.append(report.render_markdown([report.ScenarioReport(f"{SCENARIOS[budget]} ({budget})", [a, b, c],
                                                                    spt, cw)]))
    measured = any(float(est.value) == float(est.value) for est in results.values())  # not all NaN
    plots = [plot_transfer(results, target, floor, out / "distractor_transfer.png")] if measured else []
    verdict = combine("the transfer A offers C survives B, for every method", verdicts)
    return Analysis(verdict, verdicts, tables, plots, numbers, notes)


def plot_transfer(results: dict, target, floor, path: Path) -> Path:
    """FT on C per method (bar, 90 % CI), the target FT(A->C) and the floor FT(B->C) as bands."""
    fig = figure(figsize=(7, 3.8))
    ax = fig.subplots()
    labels = list(results)
    for name, est, color in (("target FT(A->C)", target, "C2"), ("floor FT(B->C)", floor, "C3")):
        value, lo, hi = (float(x) for x in est)
        if all(map(lambda v: v == v, (value, lo, hi))):
            ax.axhspan(lo, hi, color=color, alpha=0.2, lw=0)
            ax.axhline(value, color=color, lw=1.2, label=name)
    for k, label in enumerate(labels):
        value, lo, hi = (float(x) for x in results[label])
        if value == value:
            ax.bar(k, value, color="C0", alpha=0.8)
            ax.errorbar(k, value, yerr=[[value - lo], [hi - value]], color="k", capsize=3, lw=1)
    ax.set_xticks(range(len(labels)), labels)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set(ylabel="forward transfer on C", title="distractor: FT on C per method (whiskers: 90 % bootstrap CI)")
    ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    return path


STUDY = Study(
    name="distractor",
    title="transfer through a distractor (Wolczyk et al., NeurIPS 2022)",
    claim=("In A -> B -> C, the forward transfer A offers C (FT(A->C)) survives an unrelated task B trained in "
           "between: FT on C reaches FT(A->C) and stands clear of what B alone gives, FT(B->C) (the distractor "
           "question of 'Disentangling transfer in continual RL', Wolczyk et al., NeurIPS 2022), per method."),
    budgets=BUDGETS,
    expand=expand,
    analyse=analyse,
)
