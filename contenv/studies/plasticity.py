"""Study ``plasticity``: is learning speed lost on late tasks, and does continual backprop keep it?

Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood & Sutton, "Loss of plasticity in deep continual
learning" (Nature, 2024): with standard training, later tasks of a long sequence are learned
more slowly; continual backprop (and L2 with shrink-and-perturb) keeps the learning speed.
Methods: fine-tuning, continual backprop, shrink-and-perturb, L2-init, each with one Adam for
the whole run (``--no-reset-optimizer``; Adam's state carried across tasks is a known driver of
the loss) and the replay emptied at every task start (CW).

Scenarios per trunk:

- **GRU**: ``contenv/RemappedMemory-v0``, one copy task whose answer mapping changes at every
  task (task id hidden, one head), with the setting of ``scripts/bench_plasticity.py`` (GRU 8,
  plain ReLU body 2 x 16, 4 updates per step, lr 3e-3; cbp maturity 100, rate 1e-3). The body
  is ``relu``, not CW's: fine-tuning loses learning speed with both at 50 tasks x 300 steps,
  more with the ReLU body (README, "Plasticity benchmark").
- **MLP** (``--budget paper`` only): ``contenv/CW10x5-v0`` (CW10 five times, 100k steps per task)
  with CW's agent. The MLP sees only the current step, so it cannot answer any memory task
  (RemappedMemory would keep it at chance), and no Meta-World sequence long enough to lose
  plasticity fits an hour on two cores: ``--budget here`` runs the GRU only.

Learning speed of task i is its stochastic test success averaged over its own training window
(:func:`contenv.evaluation.metrics.learning_speed`); early and late are the first and last quarter
of the tasks. Verdict per trunk: fine-tuning's late-minus-early learning speed has a CI below 0
(it falls), and continual backprop's late-minus-early lies above fine-tuning's (CIs separate).
Shrink-and-perturb and L2-init are compared with fine-tuning the same way, reported beside the
claim.
"""

from __future__ import annotations

from pathlib import Path

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
    figure,
    stack_success,
    train_flags,
)
from contenv.studies.verdict import below_zero, combine, greater

LABELS = ("finetune", "cbp", "shrink-perturb", "l2-init")
# bench_plasticity's GRU agent and schedule (README, "Plasticity benchmark").
GRU = dict(agent="gru", hidden_sizes=(16, 16), rnn_size=8, body="relu", batch_size=32, seq_len=2, random_steps=50,
           update_after=50, update_every=10, gradient_steps=40, lr=3e-3, init_log_alpha=-3.0, reset_optimizer=False)
# The scenario per budget and trunk: (scenario, scenario kwargs, schedule, method kwargs).
SETTINGS = {
    "here": {
        "gru": ("contenv/RemappedMemory-v0", {"num_tasks": 50},
                dict(**GRU, steps_per_task=300, eval_every=100, eval_episodes=10, eval_deterministic_episodes=0,
                     checkpoint_every=3_000),
                {"cbp": {"maturity": 100, "rate": 1e-3}}),
    },
    "paper": {
        "gru": ("contenv/RemappedMemory-v0", {"num_tasks": 200},
                dict(**GRU, steps_per_task=3_000, eval_every=500, eval_episodes=10, eval_deterministic_episodes=0),
                {"cbp": {"maturity": 100, "rate": 1e-3}}),
        # CW's MLP agent and evaluation; cbp at its RL defaults (maturity 10,000, rate 1e-4).
        "mlp": ("contenv/CW10x5-v0", {}, dict(agent="mlp", reset_optimizer=False), {}),
    },
}
BUDGETS = {
    "here": Budget(
        seeds=(0, 1, 2),
        wall_time=("about 50 min with --workers 2 on idle cores (estimate: 12 runs of 15,000 steps at 4 updates "
                   "per step; bench_plasticity measured 6-8 CPU-minutes for such a run, plus an evaluation of "
                   "all 50 positions every 100 steps)"),
        note="GRU only (the MLP cannot answer memory tasks); 50 tasks x 300 steps with the ReLU body, the "
             "setting where the plasticity benchmark saw fine-tuning lose learning speed"),
    "paper": Budget(
        seeds=(0, 1, 2, 3, 4),
        wall_time=("GRU: 200 tasks x 3,000 steps (600k steps at 4 updates per step) per run; MLP: CW10x5 at 100k "
                   "steps per task (5M steps, about 4 days per run on a 2-core slot): a Ray cluster"),
        note="the GRU on 200 remapped tasks, the MLP on contenv/CW10x5-v0"),
}


def group(trunk: str) -> str:
    return f"{trunk}"


def expand(budget: str) -> list[RunSpec]:
    specs = []
    for trunk, (scenario, scenario_kwargs, schedule, method_kwargs) in SETTINGS[budget].items():
        for label in LABELS:
            argv = train_flags(scenario=scenario, scenario_kwargs=scenario_kwargs or None, **schedule,
                               protection=label, protection_kwargs=method_kwargs.get(label))
            specs += [RunSpec(group(trunk), label, seed, argv) for seed in BUDGETS[budget].seeds]
    return specs


def analyse(found: StudyRuns, budget: str, out: Path) -> Analysis:
    tables, verdicts, extra, plots, numbers = [], [], [], [], {}
    for trunk in SETTINGS[budget]:
        speeds = {}
        for label in LABELS:
            runs = found.get(group(trunk), label)
            if runs:
                success, steps, spt = stack_success(runs)
                speeds[label] = metrics.learning_speed(success, steps, spt)
        numbers[trunk] = {label: {k: est_dict(v) for k, v in s.items() if k != "auc"} for label, s in speeds.items()}
        rows = [[label, str(len(found.get(group(trunk), label))), cell(s["early"]), cell(s["late"]),
                 cell(s["late_minus_early"]), cell(tuple(10 * float(x) for x in s["trend"]))]
                for label, s in speeds.items()]
        tables.append(Table(f"{trunk}: learning speed (success within each task's own window)",
                            ["method", "seeds", "early tasks", "late tasks", "late - early", "trend per 10 tasks"], rows,
                            note="early / late: the first / last quarter of the tasks."))
        nan = (float("nan"),) * 3
        finetune = speeds.get("finetune", {}).get("late_minus_early", nan)
        parts = [below_zero(f"{trunk}: fine-tuning learns late tasks more slowly than early ones",
                            "finetune late - early", finetune)]
        for label in LABELS[1:]:
            check = greater(f"{trunk}: {label} keeps learning speed better than fine-tuning (late - early)",
                            f"{label} late - early", speeds.get(label, {}).get("late_minus_early", nan),
                            "finetune late - early", finetune)
            (parts if label == "cbp" else extra).append(check)
        verdicts += parts
        if speeds:
            plots.append(plot_speed(trunk, speeds, out / f"plasticity_{trunk}.png"))
    verdict = combine("learning speed on late tasks falls for fine-tuning and holds for continual backprop", verdicts)
    return Analysis(verdict, verdicts + extra, tables, plots, numbers,
                    ["shrink-perturb and l2-init comparisons are reported beside the claim and do not enter the verdict"])


def plot_speed(trunk: str, speeds: dict, path: Path) -> Path:
    """Learning speed per task index, per method, with the 90 % bootstrap band."""
    fig = figure(figsize=(7, 3.8))
    ax = fig.subplots()
    for k, (label, s) in enumerate(speeds.items()):
        auc = s["auc"]
        x = list(range(1, auc.value.shape[0] + 1))
        ax.fill_between(x, auc.lo.tolist(), auc.hi.tolist(), color=f"C{k}", alpha=0.2, lw=0)
        ax.plot(x, auc.value.tolist(), color=f"C{k}", lw=1.3, label=label)
    ax.set(xlabel="task index", ylabel="learning speed (success AUC in the task's window)", ylim=(-0.03, 1.03),
           title=f"plasticity ({trunk}): mean over seeds, band 90 % bootstrap CI")
    ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    return path


STUDY = Study(
    name="plasticity",
    title="loss of plasticity (Dohare et al., Nature 2024)",
    claim=("With standard training, learning speed on late tasks of a long sequence falls (fine-tuning), while "
           "continual backprop keeps it (Dohare et al., 'Loss of plasticity in deep continual learning', Nature "
           "2024)."),
    budgets=BUDGETS,
    expand=expand,
    analyse=analyse,
)
