"""Run directories: durable writing, resume without duplicates, tolerant reading."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from contenv.evaluation.rundir import (
    PROGRESS_FILE,
    RunLoadError,
    RunWriter,
    atomic_write_json,
    find_run_dirs,
    group_by_method,
    group_by_scenario,
    load_run,
    load_runs,
    success_column,
    write_config,
)

TASKS = ["hammer-v3", "push-v3"]


def eval_row(step: int, p0: float, p1: float, **extra) -> dict:
    row = {"step": step, "active_task": max(0, (step - 1) // 10)}
    for mode in ("stochastic", "deterministic"):
        row[success_column(0, TASKS[0], mode)] = p0
        row[success_column(1, TASKS[1], mode)] = p1
    row.update(extra)
    return row


def make_run(run_dir: Path, rows: list[dict] | None = None, **config) -> Path:
    write_config(run_dir, {"scenario": "toy", "tasks": TASKS, "steps_per_task": 10, "seed": 0, **config})
    rows = rows if rows is not None else [eval_row(s, s / 20, 0.0, **{"train/loss": 1.5}) for s in (0, 10, 20)]
    with RunWriter(run_dir) as writer:
        for row in rows:
            writer.write(row)
    return run_dir


# --------------------------------------------------------------------------- writing


def test_roundtrip_tensors_steps_and_free_columns(tmp_path):
    run = load_run(make_run(tmp_path / "run", protection="ewc", agent="sac"))
    assert run.tasks == TASKS and run.steps_per_task == 10
    assert run.steps.tolist() == [0, 10, 20] and run.steps.dtype == torch.int64
    assert run.stochastic.dtype == torch.float64
    assert run.stochastic.tolist() == [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    assert torch.equal(run.deterministic, run.stochastic)
    assert run.progress["train/loss"].tolist() == [1.5, 1.5, 1.5]
    assert run.progress.columns[:2].tolist() == ["step", "active_task"]
    assert (run.method, run.agent, run.scenario, run.seed) == ("ewc", "sac", "toy", 0)
    assert run.is_complete


def test_rows_are_on_disk_before_close(tmp_path):
    writer = RunWriter(tmp_path)
    writer.write({"step": 10, "x": 1})
    assert (tmp_path / PROGRESS_FILE).read_text() == "step,x\n10,1\n"
    writer.close()


def test_header_is_fixed_by_the_first_row(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.write({"x": 1.5, "step": 10})
        writer.write({"step": 20})  # missing column: written empty
        with pytest.raises(ValueError, match=r"\['y'\]"):
            writer.write({"step": 30, "y": 2})
    assert (tmp_path / PROGRESS_FILE).read_text().splitlines() == ["step,x", "10,1.5", "20,"]


def test_steps_must_increase(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.write({"step": 10})
        with pytest.raises(ValueError, match="truncate_after"):
            writer.write({"step": 10})


def test_existing_file_needs_resume(tmp_path):
    RunWriter(tmp_path).write({"step": 1})
    with pytest.raises(FileExistsError):
        RunWriter(tmp_path)


def test_resume_after_kill_logs_every_eval_point_once(tmp_path):
    run_dir = make_run(tmp_path / "run", rows=[eval_row(s, 0.1, 0.0) for s in (0, 5, 10, 15)])
    # killed after logging step 15; the last checkpoint was taken at step 10
    with RunWriter(run_dir, resume=True) as writer:
        assert writer.truncate_after(10) == 1
        for s in (15, 20):
            writer.write(eval_row(s, 0.9, 0.5))
    run = load_run(run_dir)
    assert run.steps.tolist() == [0, 5, 10, 15, 20]
    assert run.stochastic[:, 0].tolist() == [0.1, 0.1, 0.1, 0.9, 0.9]


def test_resume_drops_a_torn_last_line(tmp_path):
    run_dir = make_run(tmp_path / "run", rows=[eval_row(s, 0.1, 0.0) for s in (0, 10)])
    with open(run_dir / PROGRESS_FILE, "a") as f:
        f.write("20,1,0.5")  # the process died mid-row
    with RunWriter(run_dir, resume=True) as writer:
        writer.write(eval_row(20, 0.3, 0.4))
    assert load_run(run_dir).stochastic.tolist() == [[0.1, 0.0], [0.1, 0.0], [0.3, 0.4]]


def test_truncate_everything_then_write(tmp_path):
    with RunWriter(tmp_path) as writer:
        writer.write({"step": 10, "x": 1})
        assert writer.truncate_after(0) == 1
        writer.write({"step": 5, "x": 2})
    assert (tmp_path / PROGRESS_FILE).read_text().splitlines() == ["step,x", "5,2"]


def test_atomic_json_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "config.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2, "tasks": ["x"]})
    assert json.loads(path.read_text()) == {"a": 2, "tasks": ["x"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


# --------------------------------------------------------------------------- reading broken runs


def broken(tmp_path: Path, config: str | None, progress: str | None) -> Path:
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    if config is not None:
        (run_dir / "config.json").write_text(config)
    if progress is not None:
        (run_dir / PROGRESS_FILE).write_text(progress)
    return run_dir


GOOD_CONFIG = json.dumps({"tasks": TASKS, "steps_per_task": 10})
HEADER = "step," + ",".join(success_column(i, t) for i, t in enumerate(TASKS))


@pytest.mark.parametrize(
    "config, progress, file, reason",
    [
        (None, HEADER + "\n10,0,0\n", "config.json", "missing"),
        ("{not json", HEADER + "\n10,0,0\n", "config.json", "not valid JSON"),
        ('{"steps_per_task": 10}', HEADER + "\n10,0,0\n", "config.json", "missing required key 'tasks'"),
        ('{"tasks": ["a"]}', HEADER + "\n10,0,0\n", "config.json", "missing required key 'steps_per_task'"),
        ('{"tasks": ["a"], "steps_per_task": -3}', "", "config.json", "positive integer"),
        (GOOD_CONFIG, None, PROGRESS_FILE, "missing"),
        (GOOD_CONFIG, "", PROGRESS_FILE, "empty file"),
        (GOOD_CONFIG, HEADER + "\n", PROGRESS_FILE, "no eval rows"),
        (GOOD_CONFIG, HEADER + "\n10,0,0\n20,0,0,7,7\n", PROGRESS_FILE, "malformed CSV"),
        (GOOD_CONFIG, "x,y\n1,2\n", PROGRESS_FILE, "missing column 'step'"),
        (GOOD_CONFIG, "step,test/stochastic/0/hammer-v3/success\n10,0\n", PROGRESS_FILE,
         "missing columns test/stochastic/1/push-v3/success"),
        (GOOD_CONFIG, HEADER + "\n10,0,abc\n", PROGRESS_FILE, "non-numeric value 'abc'"),
        (GOOD_CONFIG, HEADER + "\n10,0,0\n20,0\n", PROGRESS_FILE, "empty in column 'test/stochastic/1/push-v3/success' at data row 2"),
        (GOOD_CONFIG, HEADER + "\n10,0,0\n10,0,0\n", PROGRESS_FILE, "steps do not increase"),
        (GOOD_CONFIG, HEADER + "\n10,0,1.5\n", PROGRESS_FILE, "outside [0, 1]"),
    ],
)
def test_broken_run_names_the_file_and_the_problem(tmp_path, config, progress, file, reason):
    run_dir = broken(tmp_path, config, progress)
    with pytest.raises(RunLoadError) as info:
        load_run(run_dir)
    assert info.value.path == run_dir / file
    assert reason in info.value.reason
    assert str(info.value).startswith(str(run_dir / file) + ": ")


def test_task_names_come_from_the_config(tmp_path):
    # a column for the right position but another task: the run's sequence is not what config says
    run_dir = broken(tmp_path, GOOD_CONFIG, "step,test/stochastic/0/push-v3/success,test/stochastic/1/push-v3/success\n10,0,0\n")
    with pytest.raises(RunLoadError, match="test/stochastic/0/hammer-v3/success"):
        load_run(run_dir)


def test_load_runs_skips_broken_runs_and_keeps_valid_ones(tmp_path):
    make_run(tmp_path / "exp" / "ok_a")
    make_run(tmp_path / "exp" / "nested" / "ok_b")
    (tmp_path / "exp" / "no_config").mkdir()
    (tmp_path / "exp" / "no_config" / PROGRESS_FILE).write_text(HEADER + "\n10,0,0\n")
    (tmp_path / "empty").mkdir()
    runs, errors = load_runs([tmp_path / "exp", tmp_path / "empty", tmp_path / "missing"])
    assert sorted(r.path.name for r in runs) == ["ok_a", "ok_b"]
    messages = sorted(str(e) for e in errors)
    assert messages == sorted(
        [
            f"{tmp_path / 'exp' / 'no_config' / 'config.json'}: missing (every run directory needs config.json)",
            f"{tmp_path / 'empty'}: no run directory (config.json) found at or under it",
            f"{tmp_path / 'missing'}: does not exist",
        ]
    )


def test_find_run_dirs_does_not_descend_into_runs(tmp_path):
    make_run(tmp_path / "run")
    make_run(tmp_path / "run" / "checkpoints" / "looks_like_a_run")
    found, errors = find_run_dirs([tmp_path])
    assert found == [tmp_path / "run"] and errors == []


def test_incomplete_run_is_flagged(tmp_path):
    run = load_run(make_run(tmp_path / "run", rows=[eval_row(10, 0.5, 0.0)]))
    assert not run.is_complete and run.total_steps == 20


def test_deterministic_columns_are_optional(tmp_path):
    run_dir = broken(tmp_path, GOOD_CONFIG, HEADER + "\n10,0.5,0\n")
    run = load_run(run_dir)
    assert run.deterministic is None
    with pytest.raises(ValueError, match="deterministic"):
        run.success("deterministic")


# --------------------------------------------------------------------------- grouping


def test_group_by_method_uses_protection_then_method_then_finetune(tmp_path):
    runs = [
        load_run(make_run(tmp_path / "a", protection="ewc", agent="sac")),
        load_run(make_run(tmp_path / "b", method="l2", agent="sac")),
        load_run(make_run(tmp_path / "c", agent="sac")),
        load_run(make_run(tmp_path / "d", protection="ewc", agent="sac", seed=1)),
    ]
    groups = group_by_method(runs)
    assert {k: len(v) for k, v in groups.items()} == {"ewc": 2, "l2": 1, "finetune": 1}


def test_group_by_method_prefixes_the_agent_when_agents_are_mixed(tmp_path):
    runs = [
        load_run(make_run(tmp_path / "a", protection="ewc", agent="sac")),
        load_run(make_run(tmp_path / "b", protection="ewc", agent="gru_sac")),
        load_run(make_run(tmp_path / "c", protection="ewc")),
    ]
    assert sorted(group_by_method(runs)) == ["?/ewc", "gru_sac/ewc", "sac/ewc"]


def test_group_by_scenario_separates_budgets(tmp_path):
    a = load_run(make_run(tmp_path / "a"))
    b = load_run(make_run(tmp_path / "b"))
    write_config(tmp_path / "c", {"scenario": "toy", "tasks": TASKS, "steps_per_task": 5})
    (tmp_path / "c" / PROGRESS_FILE).write_text((tmp_path / "a" / PROGRESS_FILE).read_text())
    c = load_run(tmp_path / "c")
    groups = group_by_scenario([a, b, c])
    assert {k: len(v) for k, v in groups.items()} == {"toy (10 steps/task)": 2, "toy (5 steps/task)": 1}


def test_progress_is_a_dataframe_with_every_column(tmp_path):
    run = load_run(make_run(tmp_path / "run"))
    assert isinstance(run.progress, pd.DataFrame) and len(run.progress) == 3
    assert success_column(1, "push-v3", "deterministic") in run.progress.columns
