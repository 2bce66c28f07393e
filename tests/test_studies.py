"""contenv study: each study's run list at both budgets, its report (tables, plots, JSON, verdict) from synthetic
run directories with known outcomes, bad input, the --dry-run plan, and (slow) a micro study end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tyro
from rundir_helpers import write_run

from contenv.studies import STUDIES, get_study
from contenv.studies import cw_order, distractor, memory_load, plasticity
from contenv.studies.common import Study, layout, load_study_runs, write_report
from contenv.studies.verdict import FAILS, HOLDS, INCONCLUSIVE
from contenv_cli import main

SPT, EVERY = 100, 20  # synthetic runs: 5 eval points per task window


def flag(argv, name):
    """The values after ``--name`` in an argv (None: absent)."""
    if f"--{name}" not in argv:
        return None
    start = argv.index(f"--{name}") + 1
    values = []
    for value in argv[start:]:
        if value.startswith("--"):
            break
        values.append(value)
    return values


def by(specs, **fields):
    return [s for s in specs if all(getattr(s, k) == v for k, v in fields.items())]


# ---------------------------------------------------------------------- expansion


def test_every_study_expands_at_both_budgets_into_distinct_runs():
    counts = {}
    for name in STUDIES:
        study = get_study(name)
        for budget in ("here", "paper"):
            specs = study.runs(budget)
            assert len({s.name for s in specs}) == len(specs), (name, budget)
            assert {s.seed for s in specs} == set(study.budgets[budget].seeds)
            for spec in specs:  # every run: one thread, no progress bar; seed and run dir added per run
                assert "--seed" not in spec.argv and "--run-dir" not in spec.argv
                full = spec.train_argv(Path("root"))
                assert flag(full, "torch-threads") == ["1"] and "--no-progress-bar" in full
                assert full[-4:] == ("--seed", str(spec.seed), "--run-dir", str(spec.run_dir(Path("root"))))
            counts[name, budget] = len(specs)
    assert counts == {("memory-load", "here"): 3 * 8 * 3, ("memory-load", "paper"): 9 * 8 * 5,
                      ("cw-order", "here"): 10 * 2 + 3 * 2, ("cw-order", "paper"): 10 * 10 + 10 * 10,
                      ("plasticity", "here"): 4 * 3, ("plasticity", "paper"): 2 * 4 * 5,
                      ("distractor", "here"): 5 * 5 + 3 * 5, ("distractor", "paper"): 5 * 5 + 3 * 5}


def test_every_run_is_accepted_by_contenv_train():
    """Each distinct argument list parses as TrainArgs and passes train's own checks (no env is built)."""
    from agents.training.run_common import TrainArgs, check_args

    seen = set()
    for name in STUDIES:
        for budget in ("here", "paper"):
            for spec in get_study(name).runs(budget):
                if spec.argv in seen:
                    continue
                seen.add(spec.argv)
                args = tyro.cli(TrainArgs, args=list(spec.train_argv(Path("root"))))
                check_args(args)
    assert len(seen) > 40


def test_memory_load_grid_methods_and_train_arguments():
    here = memory_load.expand("here")
    assert {s.group for s in here} == {"p=1,i=1", "p=3,i=1", "p=1,i=5"}
    assert [label for label in memory_load.methods("here")] == ["finetune", "ewc-empirical", "ewc", "online-ewc",
                                                                 "si", "hnet", "packnet", "replay"]
    run = by(here, group="p=3,i=1", label="ewc-empirical", seed=2)[0].argv
    assert flag(run, "tasks") == ["copy(i=1,p=3)", "copy(i=1,mapping='1032',p=3)", "copy(i=1,mapping='2301',p=3)"]
    assert flag(run, "protection") == ["ewc"] and json.loads(flag(run, "protection-kwargs")[0]) == {"fisher": "empirical"}
    assert flag(run, "agent") == ["gru"] and flag(run, "heads") == ["single"] and "--task-in-trunk" in run
    assert flag(run, "steps-per-task") == ["2000"] and flag(by(here, label="ewc")[0].argv, "protection-kwargs") is None
    assert flag(by(here, label="si")[0].argv, "protection") == ["si"]
    # the two axes reach the same episode lengths 2p + i
    grid = memory_load.GRIDS["paper"]
    assert [2 * p + i for p, i in grid.p_axis()] == [2 * p + i for p, i in grid.i_axis()] == [7, 9, 11, 13, 15]
    paper = memory_load.expand("paper")
    assert len({s.group for s in paper}) == 9 and flag(paper[0].argv, "steps-per-task") == ["200000"]
    from agents.sac import RECURRENT_BATCH

    assert memory_load.RECURRENT_BATCH == RECURRENT_BATCH  # replay's 4x batch follows the agent's default
    assert json.loads(flag(by(paper, label="replay")[0].argv, "protection-kwargs")[0]) == {"batch_size": 4 * RECURRENT_BATCH}
    assert len(flag(paper[0].argv, "tasks")) == 5
    mappings = [m for m in memory_load.MAPPINGS]
    assert all(all(a != b for a, b in zip(m, n)) for m, n in zip(mappings, mappings[1:]))  # each a derangement


def test_cw_order_methods_tasks_references_and_multitask():
    here = cw_order.expand("here")
    labels = list(dict.fromkeys(s.label for s in by(here, group="sequence")))
    assert labels == ["finetune", "l2", "ewc", "mas", "vcl", "packnet", "replay", "agem", "bc", "multitask"]
    assert set(cw_order.PUBLISHED_NAMES) == set(labels) - {"multitask"}
    tasks = list(cw_order.HERE_CANDIDATES)
    assert flag(here[0].argv, "tasks") == tasks and flag(here[0].argv, "agent") == ["mlp"]
    multitask = by(here, label="multitask")[0].argv
    assert "--multitask" in multitask and "--protection" not in multitask and "--lr" not in multitask
    assert json.loads(flag(by(here, label="bc")[0].argv, "protection-kwargs")[0]) == {"mode": "bc"}
    references = [s for s in here if s.group.startswith("reference/")]
    assert sorted({s.group for s in references}) == sorted(f"reference/{t}" for t in tasks)
    assert all(flag(s.argv, "steps-per-task") == ["4000"] and "--protection" not in s.argv for s in references)
    paper = cw_order.expand("paper")
    assert flag(paper[0].argv, "scenario") == ["contenv/CW10-v0"] and flag(paper[0].argv, "steps-per-task") is None
    assert flag(by(paper, label="multitask")[0].argv, "lr") == ["0.0001"]
    assert len({s.group for s in paper}) == 11 and {s.seed for s in paper} == set(range(10))
    assert flag(by(paper, group="reference/hammer-v3")[0].argv, "steps-per-task") == ["1000000"]


def test_cw_order_picks_measured_tasks_when_the_lead_fills_them(monkeypatch):
    monkeypatch.setattr(cw_order, "MEASURED_SINGLE_TASK_SUCCESS",
                        {"hammer-v3": 0.9, "push-v3": 0.1, "faucet-close-v3": 0.6, "window-close-v3": 0.95,
                         "shelf-place-v3": 0.7})
    assert cw_order.sequence_tasks("here") == ["hammer-v3", "faucet-close-v3", "shelf-place-v3"]  # CW10 order, 3
    with pytest.raises(ValueError, match="fewer than 2"):
        cw_order.pick_tasks({"hammer-v3": 0.9})


def test_plasticity_scenarios_trunks_and_settings():
    here = plasticity.expand("here")
    assert {s.group for s in here} == {"gru"} and {s.label for s in here} == set(plasticity.LABELS)
    run = by(here, label="cbp")[0].argv
    assert flag(run, "scenario") == ["contenv/RemappedMemory-v0"] and json.loads(flag(run, "scenario-kwargs")[0]) == {
        "num_tasks": 50}
    assert "--no-reset-optimizer" in run and json.loads(flag(run, "protection-kwargs")[0]) == {"maturity": 100,
                                                                                               "rate": 0.001}
    assert flag(run, "gradient-steps") == ["40"] and flag(run, "steps-per-task") == ["300"]
    assert flag(run, "body") == ["relu"]  # where fine-tuning loses the most learning speed (README)
    paper = plasticity.expand("paper")
    mlp = by(paper, group="mlp", label="cbp")[0].argv
    assert flag(mlp, "scenario") == ["contenv/CW10x5-v0"] and flag(mlp, "agent") == ["mlp"]
    assert flag(mlp, "protection-kwargs") is None and "--no-reset-optimizer" in mlp


def test_distractor_triplet_pairs_and_reference():
    for budget, scenario in (("here", "contenv/MemoryDistractor-v0"), ("paper", "contenv/Distractor-v0")):
        specs = distractor.expand(budget)
        a, b, c = distractor.triplet(budget)
        assert all(flag(s.argv, "scenario") == [scenario] for s in by(specs, group="triplet"))
        assert flag(by(specs, group="pair-A-C")[0].argv, "tasks") == [a, c]
        assert flag(by(specs, group="pair-B-C")[0].argv, "tasks") == [b, c]
        assert flag(by(specs, group="reference-C")[0].argv, "tasks") == [c]
        steps = {tuple(flag(s.argv, "steps-per-task")) for s in specs}
        assert len(steps) == 1  # one schedule for triplet, pairs and reference
    assert distractor.triplet("here") == ["copy(i=4,p=2)", "copy(i=4,mapping='1032',p=2)", "copy(i=4,p=2)"]


# ---------------------------------------------------------------------- reports from synthetic runs


def level_curve(position: int, level: float, tasks: int, after: float | None = None) -> list[float]:
    """0 before the task's window, ``level`` inside it, ``after`` (default: level) once it has passed."""
    points = SPT // EVERY
    out = []
    for k in range(points * tasks):
        window = k // points
        out.append(0.0 if window < position else level if window == position else (level if after is None else after))
    return out


def fake(study: Study, budget: str, root: Path, tasks_of, curves_of) -> None:
    """One synthetic finished run per spec: ``curves_of(spec, tasks)`` gives its success curves."""
    runs_root, _ = layout(root, budget)
    for spec in study.runs(budget):
        tasks = tasks_of(spec)
        write_run(spec.run_dir(runs_root), tasks, curves_of(spec, tasks), SPT, EVERY, seed=spec.seed)


def report_of(study: Study, budget: str, root: Path):
    runs_root, report_dir = layout(root, budget)
    found = load_study_runs(study.runs(budget), runs_root)
    report_dir.mkdir(parents=True, exist_ok=True)
    analysis = study.analyse(found, budget, report_dir)
    path = write_report(study, budget, analysis, found, report_dir, wall_seconds=12.0)
    results = json.loads((report_dir / "results.json").read_text())
    assert path.read_text().startswith(f"# Study {study.name}")
    assert results["runs"]["complete"] == results["runs"]["expected"] == len(study.runs(budget))
    assert results["plots"] and all((report_dir / p).stat().st_size > 1000 for p in results["plots"])
    assert "[" in path.read_text() and "| method |" in path.read_text()  # tables with CIs
    return analysis, results, path.read_text()


@pytest.mark.parametrize("outcome", [HOLDS, FAILS])
def test_memory_load_report_from_synthetic_runs(tmp_path, outcome):
    """Weight-importance methods lose 0.4 as p goes 1 -> 3 and nothing along i (holds), or the reverse (fails)."""
    def level(spec):
        p, i = (int(part.split("=")[1]) for part in spec.group.split(","))
        noise = 0.01 * (spec.seed - 1)
        if spec.label == "hnet":
            return 0.95 + noise / 2
        if spec.label in memory_load.WEIGHT_IMPORTANCE:
            load = 0.9 - 0.2 * (p - 1) if outcome == HOLDS else 0.9 - 0.1 * (i - 1)
            return load + noise
        return 0.7 + noise

    study = memory_load.STUDY
    fake(study, "here", tmp_path, lambda s: [f"t{k}" for k in range(3)],
         lambda s, tasks: [level_curve(k, level(s), 3) for k in range(3)])
    analysis, results, text = report_of(study, "here", tmp_path)
    parts = {v.claim: v.outcome for v in analysis.verdicts}
    assert analysis.verdict.outcome == outcome
    assert parts["si: final performance falls more as p grows than as i grows"] == outcome
    assert parts[next(c for c in parts if c.startswith("hnet protects best"))] == HOLDS
    drops = results["numbers"]["drops"]["ewc-empirical"]["final"]
    assert drops["drop_p"]["value"] == pytest.approx(0.4 if outcome == HOLDS else 0.0, abs=1e-9)
    assert drops["drop_i"]["value"] == pytest.approx(0.0 if outcome == HOLDS else 0.4, abs=1e-9)
    assert "During-training performance per cell" in text and "memory_load_axes.png" in text


def test_cw_order_report_ranks_like_the_published_table(tmp_path):
    """Performance built to the published CW10 values, forgetting in their order: tau-b near 1, CIs above 0."""
    published = cw_order.metrics.load_published_results("cw10").set_index("method")

    def curves(spec, tasks):
        if spec.group.startswith("reference/"):
            return [[0.8] * (SPT // EVERY)]
        if spec.label == "multitask":
            return [[0.5] * (3 * SPT // EVERY)] * 3
        row = published.loc[cw_order.PUBLISHED_NAMES[spec.label]]
        drop, performance = 0.3 * float(row["forgetting"]), float(row["performance"])  # drop: forgetting x 0.3 keeps
        end = performance + drop * 2 / 3 + 0.0002 * spec.seed  # every success in [0, 1]; P = end - drop (T - 1) / T
        return [level_curve(k, end, 3, after=end - drop if k < 2 else None) for k in range(3)]

    study = cw_order.STUDY
    fake(study, "here", tmp_path, lambda s: [s.group.split("/", 1)[1]] if s.group.startswith("reference/")
         else list(cw_order.HERE_CANDIDATES), curves)
    analysis, results, text = report_of(study, "here", tmp_path)
    assert analysis.verdict.outcome == HOLDS, analysis.verdict
    assert results["numbers"]["tau"]["forgetting"]["lo"] > 0.8 and results["numbers"]["tau"]["performance"]["value"] > 0.9
    assert results["numbers"]["single_task_success"]["window-close-v3"]["value"] == pytest.approx(0.8)
    assert "behavioral-cloning" in text and "forward transfer" in text and "candidates, not measured yet" in text


def test_plasticity_report_sees_fine_tuning_slow_down_and_cbp_keep_pace(tmp_path):
    tasks = 50

    def curves(spec, names):
        def level(k):
            if spec.label == "finetune":
                return 0.8 - 0.6 * k / (tasks - 1) + 0.01 * spec.seed
            return 0.8 + 0.01 * spec.seed
        return [level_curve(k, level(k), tasks, after=0.0) for k in range(tasks)]

    study = plasticity.STUDY
    fake(study, "here", tmp_path, lambda s: [f"t{k}" for k in range(tasks)], curves)
    analysis, results, text = report_of(study, "here", tmp_path)
    assert analysis.verdict.outcome == HOLDS, analysis.verdict
    late_minus_early = results["numbers"]["gru"]["finetune"]["late_minus_early"]["value"]
    # early: tasks 0-11, late: 38-49 (a quarter of 50, rounded): -0.6 / 49 per task over 38 tasks
    assert late_minus_early == pytest.approx(-0.6 * 38 / 49, abs=1e-6)
    assert "shrink-perturb" in text and "plasticity_gru.png" in text


def test_distractor_report_per_method(tmp_path):
    """Reference AUC^b 0.3; after A, C reaches 0.8 (FT 0.71); after B, 0.3 (FT 0). In the triplet, fine-tuning
    falls to 0.2 (fails), EWC, PackNet and hnet keep 0.8 (hold), replay's seeds split between 0.2 and 0.98
    (its CI reaches both target and floor: inconclusive)."""
    reached = {"finetune": 0.2, "ewc": 0.8, "packnet": 0.8, "hnet": 0.8, "replay": 0.8}

    def curves(spec, tasks):
        noise = 0.01 * (spec.seed - 2)
        if spec.group == "reference-C":
            return [[0.3 + noise] * (SPT // EVERY)]
        last = {"pair-A-C": 0.8, "pair-B-C": 0.3}.get(spec.group, reached.get(spec.label, 0.0))
        if spec.group == "triplet" and spec.label == "replay":  # seeds spread from below the floor to the target
            last, noise = (0.2 if spec.seed < 3 else 0.98), 0.0
        return [level_curve(k, 0.9, len(tasks)) for k in range(len(tasks) - 1)] + [
            level_curve(len(tasks) - 1, last + noise, len(tasks))]

    study = distractor.STUDY
    a, b, c = distractor.triplet("here")
    fake(study, "here", tmp_path, lambda s: {"pair-A-C": [a, c], "pair-B-C": [b, c], "reference-C": [c]}.get(
        s.group, [a, b, c]), curves)
    analysis, results, text = report_of(study, "here", tmp_path)
    outcomes = {v.claim.split(":")[0]: v.outcome for v in analysis.verdicts}
    assert outcomes == {"finetune": FAILS, "ewc": HOLDS, "packnet": HOLDS, "hnet": HOLDS, "replay": INCONCLUSIVE}
    assert analysis.verdict.outcome == FAILS
    assert results["numbers"]["target_ft_a_c"]["value"] == pytest.approx((0.8 - 0.3) / 0.7, abs=1e-6)
    assert results["numbers"]["floor_ft_b_c"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert "distractor_transfer.png" in text


def test_a_report_of_nothing_says_what_is_missing(tmp_path):
    study = plasticity.STUDY
    runs_root, report_dir = layout(tmp_path, "here")
    found = load_study_runs(study.runs("here"), runs_root)
    analysis = study.analyse(found, "here", report_dir)
    text = write_report(study, "here", analysis, found, report_dir).read_text()
    assert analysis.verdict.outcome == INCONCLUSIVE and "0 of 12 finished" in text
    assert "12 runs missing (not run yet)" in text


# ---------------------------------------------------------------------- the command


def test_dry_run_prints_the_plan_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "plasticity", "--dry-run", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("study plasticity") and "12 runs" in lines[0]
    assert any(line.startswith("wall time: about") for line in lines)
    runs = [line for line in lines if "contenv train" in line]
    assert len(runs) == 12 and all(line.split()[0] == "new" for line in runs)
    assert "--scenario contenv/RemappedMemory-v0" in runs[0] and "--seed 0 --run-dir" in runs[0]
    assert not out.exists()


def test_dry_run_marks_finished_runs_done(tmp_path, capsys):
    out = tmp_path / "study"
    spec = plasticity.expand("here")[0]
    write_run(spec.run_dir(layout(out, "here")[0]), ["t0"], [[0.5] * 5], SPT, EVERY)
    assert main(["study", "plasticity", "--dry-run", "--out", str(out)]) == 0
    states = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "contenv train" in line]
    assert states.count("done") == 1 and states.count("new") == 11


def test_report_only_writes_the_report_of_what_is_there(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "distractor", "--report-only", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 of 40 runs finished" in printed and "verdict: inconclusive" in printed
    assert (out / "report-here" / "report.md").exists() and (out / "report-here" / "results.json").exists()
    assert not (out / "runs").exists()


@pytest.mark.parametrize("argv,message", [
    (["study", "memory"], "unknown study 'memory'; studies: memory-load, cw-order, plasticity, distractor"),
    (["study", "plasticity", "--budget", "huge"], "unknown budget 'huge'; budgets: here, paper"),
    (["study", "plasticity", "--backend", "slurm"], "unknown backend 'slurm'; backends: local, ray"),
    (["study", "plasticity", "--workers", "0"], "--workers must be >= 1"),
])
def test_bad_input_is_refused_with_what_is_allowed(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_study_refuses_a_budget_it_does_not_have():
    with pytest.raises(ValueError, match="unknown budget 'full' for study cw-order; budgets: here, paper"):
        get_study("cw-order").runs("full")


@pytest.mark.slow
def test_a_micro_study_runs_end_to_end_and_a_rerun_skips_every_run(tmp_path, monkeypatch, capsys):
    """The real thing, shrunk: plasticity on 3 remapped tasks of 40 steps, 2 methods x 2 seeds, through the local pool."""
    from contenv.studies.common import Budget

    settings = {"gru": ("contenv/RemappedMemory-v0", {"num_tasks": 3},
                        dict(plasticity.GRU, steps_per_task=40, eval_every=20, eval_episodes=2,
                             eval_deterministic_episodes=0, random_steps=10, update_after=10, gradient_steps=4,
                             checkpoint_every=20), {"cbp": {"maturity": 5, "rate": 0.05}})}
    monkeypatch.setattr(plasticity, "SETTINGS", {"here": settings, "paper": settings})
    monkeypatch.setattr(plasticity, "LABELS", ("finetune", "cbp"))
    monkeypatch.setitem(plasticity.BUDGETS, "here", Budget((0, 1), "a minute"))
    out = tmp_path / "micro"
    assert main(["study", "plasticity", "--out", str(out), "--workers", "1"]) == 0
    first = capsys.readouterr().out
    assert "4 of 4 runs finished" in first and "verdict:" in first
    results = json.loads((out / "report-here" / "results.json").read_text())
    assert results["runs"]["complete"] == 4 and (out / "report-here" / "plasticity_gru.png").exists()
    progress = out / "runs/here/gru/finetune/seed0/progress.csv"
    before = progress.read_text()
    assert main(["study", "plasticity", "--out", str(out), "--workers", "1"]) == 0  # resumes: nothing to do
    assert progress.read_text() == before
    assert "4 of 4 runs finished" in capsys.readouterr().out
