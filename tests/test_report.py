"""scripts/report.py and contenv.evaluation.report on synthetic run directories with known success values."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from contenv.evaluation import metrics
from contenv.evaluation.report import (
    ScenarioReport,
    method_result,
    per_task_rows,
    read_reference_csv,
    reference_matrix,
)
from contenv.evaluation.rundir import PROGRESS_FILE, RunLoadError, RunWriter, success_column, write_config

ROOT = Path(__file__).resolve().parents[1]
SPT = 100
STEPS = list(range(0, 2 * SPT + 1, 10))  # 21 eval points, 10 per task window


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["report_cli"] = module
    spec.loader.exec_module(module)
    return module


def task0(step: int, keeps: bool) -> float:
    """Learned in its window (1.0); afterwards 0.2, or 1.0 when the method keeps it."""
    if step == 0:
        return 0.0
    return 1.0 if step <= SPT or keeps else 0.2


def task1(step: int) -> float:
    """0 before its window, 0.5 for its first five eval points, then 1.0."""
    return 0.0 if step <= SPT else (0.5 if step <= 150 else 1.0)


def write_run(run_dir: Path, protection: str, keeps: bool, seed: int, steps=STEPS, **config) -> Path:
    write_config(
        run_dir,
        {"scenario": "toy", "tasks": ["a", "b"], "steps_per_task": SPT, "seed": seed,
         "agent": "sac", "protection": protection, "eval_every": 10, **config},
    )
    with RunWriter(run_dir) as writer:
        for step in steps:
            writer.write({
                "step": step,
                "active_task": min(1, max(0, (step - 1) // SPT)),
                success_column(0, "a"): task0(step, keeps),
                success_column(1, "b"): task1(step),
                "train/loss": 0.0,
            })
    return run_dir


def write_reference(run_dir: Path, task: str, value: float) -> Path:
    write_config(run_dir, {"tasks": [task], "steps_per_task": SPT, "seed": 0, "protection": "finetune"})
    with RunWriter(run_dir) as writer:
        for step in range(0, SPT + 1, 10):
            writer.write({"step": step, "active_task": 0, success_column(0, task): 0.0 if step == 0 else value})
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """finetune: 3 seeds that forget task a; ewc: one seed that forgets, one that keeps."""
    root = tmp_path_factory.mktemp("runs")
    for seed in range(3):
        write_run(root / "finetune" / f"s{seed}", "finetune", keeps=False, seed=seed)
    write_run(root / "ewc" / "s0", "ewc", keeps=False, seed=0)
    write_run(root / "ewc" / "s1", "ewc", keeps=True, seed=1)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    for task in ("a", "b"):
        for seed in range(2):
            write_reference(root / f"{task}_{seed}", task, 0.5)
    return root


def run_cli(cli, capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# Hand computation (final and end-of-task values average 5 eval points):
#   forgetting seed: performance (0.2 + 1.0) / 2 = 0.6, forgetting (0.8 + 0) / 2 = 0.4
#   keeping seed:    performance 1.0, forgetting 0.0
#   AUC a = 1.0, AUC b = (5 * 0.5 + 5 * 1.0) / 10 = 0.75; reference AUC 0.5 for both
#   FT = ((1.0 - 0.5) / 0.5 + (0.75 - 0.5) / 0.5) / 2 = 0.75
#   ewc, 2 seeds: resampled means 0.6 / 0.8 / 1.0 with p = 1/4, 1/2, 1/4 -> CI [0.60, 1.00]
EXPECTED_TABLE = """\
### toy

| method | seeds | performance | forgetting | forward transfer |
|---|---|---|---|---|
| ewc | 2 | 0.80 [0.60, 1.00] | 0.20 [0.00, 0.40] | 0.75 [0.75, 0.75] |
| finetune | 3 | 0.60 [0.60, 0.60] | 0.40 [0.40, 0.40] | 0.75 [0.75, 0.75] |
"""


def test_markdown_table_of_synthetic_runs(cli, capsys, runs, references):
    code, out, err = run_cli(cli, capsys, runs, "--reference", references)
    assert code == 0
    assert out == EXPECTED_TABLE
    assert err == ""


def test_without_reference_forward_transfer_is_na_with_a_note(cli, capsys, runs):
    code, out, err = run_cli(cli, capsys, runs)
    assert code == 0
    assert "| ewc | 2 | 0.80 [0.60, 1.00] | 0.20 [0.00, 0.40] | n/a |" in out.splitlines()
    assert "note: toy: forward transfer n/a (no --reference given)" in err


def test_reference_auc_csv(cli, capsys, runs, tmp_path):
    ref = tmp_path / "ref.csv"
    ref.write_text("task,auc\na,0.5\na,0.5\nb,0.4\nb,0.6\n")
    code, out, _ = run_cli(cli, capsys, runs, "--reference", ref)
    # resampled reference means of b: 0.4 / 0.5 / 0.6 -> FT_b = 0.35/0.6, 0.5, 0.15/0.4;
    # FT = (1 + FT_b) / 2 spans [0.6875, 0.7917]: the reference seeds are resampled too
    assert "| finetune | 3 | 0.60 [0.60, 0.60] | 0.40 [0.40, 0.40] | 0.75 [0.69, 0.79] |" in out.splitlines()


def test_broken_runs_are_named_and_valid_runs_still_reported(cli, capsys, runs, references, tmp_path):
    bad = tmp_path / "bad"
    no_config = bad / "no_config"
    no_config.mkdir(parents=True)
    (no_config / PROGRESS_FILE).write_text("step\n10\n")
    malformed = write_run(bad / "malformed", "finetune", keeps=False, seed=9)
    with open(malformed / PROGRESS_FILE, "a") as f:
        f.write("210,1,0.5,0.5,0,extra,fields\n")
    incomplete = write_run(bad / "incomplete", "finetune", keeps=False, seed=8, steps=STEPS[:5])
    code, out, err = run_cli(cli, capsys, runs, bad, tmp_path / "nowhere", "--reference", references)
    assert code == 0
    assert out == EXPECTED_TABLE  # the three bad runs changed nothing
    lines = err.splitlines()
    assert f"error: {no_config / 'config.json'}: missing (every run directory needs config.json)" in lines
    assert any(line.startswith(f"error: {malformed / PROGRESS_FILE}: malformed CSV") for line in lines)
    assert f"error: {incomplete / PROGRESS_FILE}: incomplete: last eval at step 40 of 200 (still running or killed?); left out" in lines
    assert f"error: {tmp_path / 'nowhere'}: does not exist" in lines


def test_no_valid_run_exits_nonzero(cli, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(cli, capsys, tmp_path / "empty")
    assert code == 1 and out == ""
    assert "no run directory" in err and "no valid run to report" in err


def test_csv_format_has_the_published_layout(cli, capsys, runs, references):
    code, out, _ = run_cli(cli, capsys, runs, "--reference", references, "--format", "csv")
    table = pd.read_csv(io.StringIO(out)).set_index("method")
    published = metrics.load_published_results("cw20")
    assert set(published.columns) - {"method"} <= set(table.columns)
    assert table.loc["ewc", ["performance", "performance_lo", "performance_hi"]].tolist() == [0.8, 0.6, 1.0]
    assert table.loc["finetune", "forgetting"] == pytest.approx(0.4)
    assert table.loc["finetune", "forward_transfer"] == pytest.approx(0.75)
    assert table.loc["finetune", "seeds"] == 3


def test_latex_format_escapes_names(cli, capsys, tmp_path):
    write_run(tmp_path / "r", "my_method", keeps=True, seed=0)
    code, out, _ = run_cli(cli, capsys, tmp_path, "--format", "latex")
    assert r"\begin{tabular}{lrlll}" in out and r"\end{tabular}" in out
    assert r"my\_method & 1 & 1.00 [1.00, 1.00] & 0.00 [0.00, 0.00] & n/a \\" in out


def test_published_rows_stand_apart_from_runs_of_another_protocol(cli, capsys, runs):
    code, out, err = run_cli(cli, capsys, runs, "--compare-published", "cw20")
    toy, published = out.split("### CW20 (published)")
    assert "published" not in toy  # the toy runs are not CW20: no published row beside them
    assert "| finetune | 3 | 0.60 [0.60, 0.60] | 0.40 [0.40, 0.40] | n/a |" in toy.splitlines()
    lines = published.splitlines()
    assert "| packnet (CW20 2021, published, Meta-World v1) | - | 0.80 [0.79, 0.82] | -0.00 [-0.01, 0.01] | 0.18 [0.14, 0.21] |" in lines
    assert sum("published" in line for line in lines) == 8  # all CW20 published rows
    assert "note: no run trains the CW20 task list (contenv/CW20-v0); the published rows are shown on their own" in err


def test_published_rows_sit_beside_runs_of_their_task_list_with_a_budget_warning(cli, capsys, tmp_path):
    from contenv.evaluation.report import published_protocol

    tasks, _ = published_protocol("cw10")
    steps = list(range(0, 10 * SPT + 1, 20))
    for seed in range(2):
        run_dir = tmp_path / "cw10" / f"s{seed}"
        write_config(run_dir, {"scenario": "contenv/CW10-v0", "tasks": tasks, "steps_per_task": SPT, "seed": seed})
        with RunWriter(run_dir) as writer:
            for step in steps:
                writer.write({"step": step, **{success_column(i, t): 1.0 for i, t in enumerate(tasks)}})
    # a run started as CW10 on one task is labelled by what it trained, and gets no published rows
    write_config(tmp_path / "one" / "s0", {"scenario": "contenv/CW10-v0", "tasks": ["reach-v3"], "steps_per_task": SPT, "seed": 0})
    with RunWriter(tmp_path / "one" / "s0") as writer:
        for step in range(0, SPT + 1, 10):
            writer.write({"step": step, success_column(0, "reach-v3"): 1.0})
    code, out, err = run_cli(cli, capsys, tmp_path, "--compare-published", "cw10")
    assert code == 0
    cw10, one = out.split("### tasks reach-v3 (given to contenv/CW10-v0)")
    assert cw10.startswith("### contenv/CW10-v0\n") and "(CW10 2022, published, Meta-World v1)" in cw10
    assert "published" not in one and "### CW10 (published)" not in out
    assert ("note: contenv/CW10-v0: trained 100 steps/task, the published CW10 rows 1,000,000: budgets differ, "
            "the numbers are not directly comparable") in err


def test_runs_with_different_settings_are_separate_rows_labelled_with_the_difference(cli, capsys, tmp_path):
    for seed in range(2):
        write_run(tmp_path / "coef1" / f"s{seed}", "ewc", keeps=True, seed=seed, protection_kwargs={"coef": 1},
                  lr=0.001, device="cpu", torch_threads=1)
        write_run(tmp_path / "coef100" / f"s{seed}", "ewc", keeps=False, seed=seed, protection_kwargs={"coef": 100},
                  lr=0.001, device="cuda", torch_threads=4)  # runtime keys do not split rows
    write_run(tmp_path / "lr" / "s0", "ewc", keeps=False, seed=0, protection_kwargs={"coef": 1}, lr=0.0003)
    code, out, err = run_cli(cli, capsys, tmp_path)
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ewc")]
    assert rows == [
        "| ewc (lr=0.0003, protection_kwargs.coef=1) | 1 | 0.60 [0.60, 0.60] | 0.40 [0.40, 0.40] | n/a |",
        "| ewc (lr=0.001, protection_kwargs.coef=1) | 2 | 1.00 [1.00, 1.00] | 0.00 [0.00, 0.00] | n/a |",
        "| ewc (lr=0.001, protection_kwargs.coef=100) | 2 | 0.60 [0.60, 0.60] | 0.40 [0.40, 0.40] | n/a |",
    ]


def test_duplicate_seeds_in_a_group_are_refused(cli, capsys, runs, tmp_path):
    write_run(tmp_path / "again" / "s1", "finetune", keeps=True, seed=1)
    code, out, err = run_cli(cli, capsys, runs, tmp_path / "again", runs / "finetune")  # overlapping paths count once
    assert code == 0
    assert "| finetune" not in out and "| ewc | 2 |" in out
    lines = [line for line in err.splitlines() if "seed 1 appears 2 times in group toy / finetune" in line]
    assert len(lines) == 2 and "a group needs distinct seeds" in lines[0]
    code, out, _ = run_cli(cli, capsys, runs, runs / "finetune")
    assert "| finetune | 3 |" in out  # the same run reached by two paths is one run


@pytest.mark.parametrize("option, message", [
    (("--final-points", "0"), "--final-points must be at least 1, got 0"),
    (("--final-points", "-2"), "--final-points must be at least 1, got -2"),
    (("--transfer-matrix", "/nonexistent.csv"), "--transfer-matrix /nonexistent.csv: no such file"),
])
def test_bad_options_are_refused_before_anything_is_read(cli, capsys, runs, option, message):
    code, out, err = run_cli(cli, capsys, runs, *option)
    assert code == 2 and out == ""
    assert err.strip() == f"error: {message}"


def test_plots_pointing_at_a_file_is_refused_and_the_file_left_alone(cli, capsys, runs, tmp_path):
    target = tmp_path / "plots.png"
    target.write_bytes(b"mine")
    code, out, err = run_cli(cli, capsys, runs, "--plots", target)
    assert code == 2 and out == "" and "is a file; give a directory" in err
    assert target.read_bytes() == b"mine"


def test_final_points_beyond_a_task_window_is_refused_not_silently_used(cli, capsys, runs):
    code, out, err = run_cli(cli, capsys, runs, "--final-points", "10")
    assert code == 0 and "| ewc | 2 |" in out  # 10 eval points per window: allowed
    code, out, err = run_cli(cli, capsys, runs, "--final-points", "11")
    assert code == 1 and out == ""
    assert "final_points=11 needs that many eval points in every task window; these runs have 10" in err


@pytest.mark.parametrize("fmt", ["md", "latex", "csv"])
def test_published_rows_say_in_the_table_that_they_are_meta_world_v1(cli, capsys, runs, fmt):
    code, out, _ = run_cli(cli, capsys, runs, "--compare-published", "cw10", "--format", fmt)
    assert code == 0
    published = [line for line in out.splitlines() if "published" in line and not line.startswith(("#", "%"))]
    assert published and all("Meta-World v1" in line for line in published)
    if fmt != "csv":  # the table's own note: which version each side ran
        assert "12-dim observations, v1 rewards" in out and "Meta-World v3" in out
    code, out, _ = run_cli(cli, capsys, runs, "--format", fmt)
    assert "Meta-World v1" not in out  # nothing to say without published rows


def test_per_task_targets_and_rt_from_the_shipped_matrix_are_marked_v1(cli, capsys, runs, references, tmp_path):
    code, out, _ = run_cli(cli, capsys, runs, "--per-task")
    assert code == 0 and "transfer target (source) [shipped CW10 matrix, Meta-World v1]" in out
    own = tmp_path / "own.csv"
    own.write_text("source,a,b\na,0.0,0.1\nb,0.2,0.0\n")
    code, out, _ = run_cli(cli, capsys, runs, "--per-task", "--transfer-matrix", own)
    assert code == 0 and "Meta-World v1" not in out


def test_plots_are_written(cli, capsys, runs, references, tmp_path):
    code, _, err = run_cli(cli, capsys, runs, "--reference", references, "--plots", tmp_path / "plots")
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    # the toy tasks are not in the (default CW10) transfer matrix: no heatmap of another scenario's matrix
    assert names == ["toy_average_performance.png", "toy_forgetting.png", "toy_per_task.csv",
                     "toy_task_curves.png"]
    for name in names:
        if name.endswith(".png"):
            assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_task = pd.read_csv(tmp_path / "plots" / "toy_per_task.csv")
    finetune = per_task[per_task["method"] == "finetune"]
    assert finetune["forgetting"].tolist() == pytest.approx([0.8, 0.0])
    assert finetune["forward_transfer"].tolist() == pytest.approx([1.0, 0.5])


def test_plots_name_their_bands_and_the_transfer_matrix_source(monkeypatch, tmp_path):
    import contenv.evaluation.report as report_module

    titles = []
    monkeypatch.setattr(report_module, "plot_transfer_matrix", lambda names, m, path, title="": titles.append(title))
    result = method_result("m", torch.ones(2, 2, 2, dtype=torch.float64), torch.tensor([1, 2]), 1, final_points=1)
    report = ScenarioReport("pair", ["hammer-v3", "push-wall-v3"], 1, [result])
    report_module.write_plots([report], tmp_path, metrics.load_transfer_matrix(), "my matrix.csv")
    assert len(titles) == 1 and "from my matrix.csv, not from these runs" in titles[0]
    assert "band: 90 % bootstrap CI" in report_module.BAND_NOTE


def test_reference_dirs_must_hold_single_task_runs(cli, capsys, runs, tmp_path):
    write_run(tmp_path / "two_tasks", "finetune", keeps=False, seed=0)
    code, out, err = run_cli(cli, capsys, runs, "--reference", tmp_path)
    assert f"error: {tmp_path / 'two_tasks' / 'config.json'}: a reference run trains one task, this one 2" in err
    assert "forward transfer n/a: no reference for a, b at 100 steps/task" in err


def test_reference_csv_with_wrong_columns(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("name,value\na,0.5\n")
    with pytest.raises(RunLoadError, match=r"ref.csv: missing columns \['task', 'auc'\]"):
        read_reference_csv(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_requested_without_cuda(cli, capsys, runs):
    code, _, err = run_cli(cli, capsys, runs, "--device", "cuda")
    assert code == 2 and "no CUDA device" in err


# --------------------------------------------------------------------------- library pieces


def test_reference_matrix_shares_columns_of_repeated_tasks_and_balances_seeds():
    matrix, note = reference_matrix({("a", 5): [0.1, 0.3, 0.9], ("b", 5): [0.5, 0.7]}, ["a", "b", "a", "b"], 5)
    assert matrix.tolist() == [[0.1, 0.5, 0.1, 0.5], [0.3, 0.7, 0.3, 0.7]]
    assert note == "reference runs cut to 2 per task (a: 3, b: 2) so every task has as many"


def test_reference_matrix_reports_missing_or_other_budget():
    matrix, note = reference_matrix({("a", 5): [0.1], ("b", 7): [0.5]}, ["a", "b"], 5)
    assert matrix is None
    assert note == "forward transfer n/a: no reference for b at 5 steps/task (found only with steps_per_task [7])"


def test_per_task_transfer_target_of_a_distractor_triplet():
    # A -> B -> C = push -> window-close -> hammer; C's target comes from A, not from B
    tasks = ["push-v3", "window-close-v3", "hammer-v3"]
    steps = torch.tensor([5, 10, 15, 20, 25, 30])
    success = torch.ones(2, 6, 3, dtype=torch.float64)
    result = method_result("finetune", success, steps, 10, ref_auc=torch.full((1, 3), 0.5, dtype=torch.float64))
    rows = per_task_rows(ScenarioReport("triplet", tasks, 10, [result]), metrics.load_transfer_matrix())
    assert rows["target_source"].tolist() == ["", "push-v3", "push-v3"]
    assert rows["transfer_target"].tolist()[1:] == pytest.approx([0.4175, 0.2034])
    assert rows["forward_transfer"].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_eval_grid_missing_a_task_window_is_reported_not_raised(cli, capsys, runs, tmp_path):
    sparse = write_run(tmp_path / "sparse", "sparse", keeps=False, seed=0, steps=[0, 150, 200])
    code, out, err = run_cli(cli, capsys, runs, tmp_path)
    assert code == 0 and "| finetune | 3 |" in out and "sparse" not in out
    assert f"error: {sparse / PROGRESS_FILE}: no eval point in the training window of task(s) [0] (end of task); left out" in err
