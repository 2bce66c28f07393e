"""scripts/train.py: run directories, checkpoints, exact resume, SIGKILL, bad input."""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents.training.checkpoint import CheckpointError
from agents.training.run import RunError, TrainArgs, train
from agents.sac import SAC
from contenv.evaluation.rundir import load_run

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

# Two Meta-World tasks (the env whose random streams a resume must restore), 300 steps each.
TINY = dict(scenario="contenv/Sequence-v0", tasks=("reach-v3", "push-v3"), steps_per_task=300, horizon=50,
            hidden_sizes=(32, 32), batch_size=16, random_steps=50, update_after=50, update_every=25,
            eval_every=100, eval_episodes=2, eval_deterministic_episodes=1, checkpoint_every=120,
            progress_bar=False)


def tiny_args(run_dir, **overrides):
    return TrainArgs(**{**TINY, "run_dir": Path(run_dir), **overrides})


def cli_flags(run_dir, **overrides):
    flags = []
    for key, value in {**TINY, "run_dir": run_dir, **overrides}.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(tiny_args(tmp_path_factory.mktemp("runs") / "a"))


def test_a_run_writes_the_run_directory(uninterrupted):
    run = load_run(uninterrupted)
    assert run.steps.tolist() == [100, 200, 300, 400, 500, 600]
    assert run.progress["active_task"].tolist() == [0, 0, 0, 1, 1, 1]
    assert run.stochastic.shape == (6, 2) and run.deterministic.shape == (6, 2)
    assert {"train/critic_loss", "train/return", "train/alpha/1"} <= set(run.progress.columns)
    assert run.progress["plasticity/q1/srank"].notna().all() and (run.progress["plasticity/actor/grad_norm"] > 0).all()
    config = json.loads((uninterrupted / "config.json").read_text())
    for key in ("scenario", "tasks", "steps_per_task", "seed", "agent", "protection", "eval_every", "sac"):
        assert key in config
    assert config["tasks"] == ["reach-v3", "push-v3"] and config["sac"]["batch_size"] == 16
    assert list((uninterrupted / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = uninterrupted / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"checkpoint.pt", "agent_after_task_0.pt", "agent_after_task_1.pt"}
    assert SAC.load(checkpoints / "agent_after_task_0.pt").current_task == 0


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(uninterrupted, tmp_path):
    run_dir = tmp_path / "b"
    train(tiny_args(run_dir, stop_at_step=130))
    assert load_run(run_dir).steps.tolist() == [100]
    train(tiny_args(run_dir, resume=True))
    assert (run_dir / "progress.csv").read_text() == (uninterrupted / "progress.csv").read_text()


def test_a_killed_run_resumes_without_losing_or_repeating_rows(uninterrupted, tmp_path):
    run_dir = tmp_path / "killed"
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), *cli_flags(run_dir)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress, checkpoint = run_dir / "progress.csv", run_dir / "checkpoints" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        rows = progress.read_text().count("\n") - 1 if progress.exists() else 0
        if checkpoint.exists() and rows >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    logged = load_run(run_dir).steps.tolist()
    assert 3 <= len(logged) < 6
    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "progress.csv").read_text() == (uninterrupted / "progress.csv").read_text()


def test_resume_with_another_config_is_refused_and_writes_nothing(uninterrupted, tmp_path):
    before = {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match=r"(?s)batch_size: 16 -> 32.*sac.batch_size: 16 -> 32.*seed: 0 -> 5"):
        train(tiny_args(uninterrupted, resume=True, seed=5, batch_size=32))
    assert {p: p.read_bytes() for p in uninterrupted.rglob("*") if p.is_file()} == before


def test_a_corrupt_or_truncated_checkpoint_is_named_and_left_alone(uninterrupted, tmp_path):
    for damage, message in ((lambda b: b[: len(b) // 2], "truncated"),
                            (lambda b: b[:-100] + bytes(100), "corrupt"),
                            (lambda b: b"garbage" + b[7:], "not a contenv checkpoint")):
        run_dir = tmp_path / message.replace(" ", "_")
        train(tiny_args(run_dir, stop_at_step=130))
        checkpoint = run_dir / "checkpoints" / "checkpoint.pt"
        checkpoint.write_bytes(damage(checkpoint.read_bytes()))
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        with pytest.raises(CheckpointError, match=message) as error:
            train(tiny_args(run_dir, resume=True))
        assert str(checkpoint) in str(error.value)
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_an_existing_run_directory_is_never_overwritten(uninterrupted):
    before = (uninterrupted / "progress.csv").read_bytes()
    with pytest.raises(RunError, match="already exists"):
        train(tiny_args(uninterrupted))
    assert (uninterrupted / "progress.csv").read_bytes() == before


@pytest.mark.parametrize("overrides, message", [
    (dict(agent="rnn"), "unknown agent 'rnn'"),
    (dict(protection="ecw"), "Did you mean: ewc"),
    (dict(protection="packnet+hnet"), "packnet and hnet"),
    (dict(scenario="contenv/CW11-v0"), "unknown scenario"),
    (dict(scenario="CartPole-v1"), "unknown scenario"),
    (dict(tasks=("reach-v3", "no-such-task")), "unknown task"),
    (dict(device="cuda:7") if not torch.cuda.is_available() else dict(device="tpu"), "device"),
    (dict(eval_every=0), "eval-every"),
])
def test_bad_input_gives_clear_errors_and_no_run_directory(tmp_path, overrides, message):
    with pytest.raises((ValueError, NotImplementedError), match=message):
        train(tiny_args(tmp_path / "bad", **overrides))
    assert not (tmp_path / "bad").exists()


def test_the_cli_reports_errors_without_a_traceback(tmp_path):
    train_script = _script("train")
    assert train_script.main(cli_flags(tmp_path / "x", agent="rnn")) == 2
    assert not (tmp_path / "x").exists()


def test_args_defaults_are_continual_worlds():
    args = TrainArgs()
    config = args.sac_config()
    assert (args.eval_every, args.eval_episodes, args.eval_deterministic_episodes) == (20_000, 10, 1)
    assert (config.lr, config.batch_size, config.gamma, config.polyak) == (1e-3, 128, 0.99, 0.995)
    assert (config.random_steps, config.update_after, config.update_every) == (10_000, 1_000, 50)
    assert config.hidden_sizes == (256, 256, 256, 256) and config.replay_size == 1_000_000
    assert dataclasses.fields(TrainArgs)  # one dataclass of arguments
    assert (config.task_in_trunk, config.reset_optimizer_on_task_change) == (False, True)


def test_options_added_later_are_recorded_only_when_set_so_older_runs_still_resume():
    from agents.training.run_common import make_scenario, run_config

    args = tiny_args("unused")
    config = run_config(args, make_scenario(args))
    assert not {"multitask", "task_in_trunk", "reset_optimizer", "target_entropy", "tune_alpha"} & set(config)
    changed = tiny_args("unused", task_in_trunk=True, reset_optimizer=False)
    config = run_config(changed, make_scenario(changed))
    assert (config["task_in_trunk"], config["reset_optimizer"]) == (True, False)
    assert (config["sac"]["task_in_trunk"], config["sac"]["reset_optimizer_on_task_change"]) == (True, False)


def test_a_run_written_before_body_and_rnn_layers_existed_resumes_and_a_changed_body_is_refused():
    from agents.training.run_common import config_differences, make_scenario, run_config

    args = tiny_args("unused", agent="gru")
    current = run_config(args, make_scenario(args))
    assert (current["sac"]["body"], current["sac"]["rnn_layers"]) == ("cw", 1) and "body" not in current
    older = json.loads(json.dumps(current))
    del older["sac"]["body"], older["sac"]["rnn_layers"], older["sac"]["tune_alpha"]  # as before they existed
    assert config_differences(older, current) == []
    relu = tiny_args("unused", agent="gru", body="relu")
    assert config_differences(older, run_config(relu, make_scenario(relu))) == [
        "body: '<missing>' -> 'relu'", "sac.body: 'cw' -> 'relu'"]


def test_reference_runs_train_each_task_alone_and_feed_the_report(tmp_path, capsys):
    from contenv.evaluation.report import reference_from_runs
    from contenv.evaluation.rundir import load_runs

    reference = _script("reference")
    args = reference.ReferenceArgs(**{**TINY, "tasks": ("reach-v3", "push-v3", "reach-v3"), "steps_per_task": 100,
                                      "eval_every": 50, "eval_episodes": 1, "eval_deterministic_episodes": 0},
                                   out_dir=tmp_path / "ref", seeds=(0,))
    run_dirs = reference.reference_runs(args)
    assert [p.relative_to(tmp_path / "ref").as_posix() for p in run_dirs] == ["reach-v3/seed0", "push-v3/seed0"]
    runs, errors = load_runs([tmp_path / "ref"])
    assert not errors and sorted(run.tasks[0] for run in runs) == ["push-v3", "reach-v3"]
    found, errors = reference_from_runs(runs)
    assert not errors and set(found) == {("reach-v3", 100), ("push-v3", 100)}
    assert reference.reference_runs(args) == run_dirs  # finished runs are skipped
    assert "finished, skipped" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--protection", "ewc"], ["--protection", "packnet"],
                                   ["--protection-kwargs", '{"coefficient": 1}']])
def test_reference_runs_are_plain_sac_and_refuse_a_protection_before_creating_anything(tmp_path, capsys, flags):
    reference = _script("reference")
    out = tmp_path / "ref"
    code = reference.main(["--scenario", "contenv/Sequence-v0", "--tasks", "reach-v3", "--steps-per-task", "100",
                           "--out-dir", str(out), *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert "plain SAC" in err and "run_single.py" in err
    assert not out.exists() and not (tmp_path / "runs").exists()
