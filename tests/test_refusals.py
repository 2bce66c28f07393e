"""A refusal changes nothing already written: train.py's argument checks and the SB3 callback."""

import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import contenv  # noqa: F401
from agents.training.run import RunError, TrainArgs, train
from contenv.evaluation.rundir import PROGRESS_FILE, load_run

torch.set_num_threads(1)

TINY = dict(scenario="contenv/Sequence-v0", tasks=("copy(p=1)",), steps_per_task=40, hidden_sizes=(8,), batch_size=4,
            random_steps=10, update_after=10, update_every=10, eval_every=20, eval_episodes=1,
            eval_deterministic_episodes=0, checkpoint_every=20, progress_bar=False)

BAD = [
    (dict(seed=-1), "--seed must be a non-negative integer"),
    (dict(lr=-1.0), "lr must be a positive number"),
    (dict(lr=float("nan")), "lr must be a positive number"),
    (dict(hidden_sizes=(0,)), "hidden_sizes .* must be positive"),
    (dict(rnn_size=0, agent="gru"), "must be positive"),
    (dict(clip_grad_norm=-1.0), "clip_grad_norm must be positive"),
    (dict(protection="ewc", protection_kwargs='{"no_such_key": 1}'), "--protection-kwargs .*no_such_key"),
    (dict(protection_kwargs="[1, 2]"), "--protection-kwargs must be a JSON object"),
    (dict(scenario_kwargs="{oops"), "--scenario-kwargs must be a JSON object"),
    (dict(steps_per_task=0), "--steps-per-task must be positive"),
    (dict(stop_at_step=-5), "--stop-at-step must be positive"),
]


def snapshot(directory: Path) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return train(TrainArgs(**TINY, run_dir=tmp_path_factory.mktemp("runs") / "run"))


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_arguments_are_refused_before_a_run_directory_is_made(tmp_path, overrides, message):
    with pytest.raises(RunError, match=message):
        train(TrainArgs(**{**TINY, **overrides}, run_dir=tmp_path / "new"))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("overrides, message", BAD[:4] + BAD[6:7])
def test_a_refused_resume_leaves_the_run_directory_byte_identical(finished_run, overrides, message):
    before = snapshot(finished_run)
    with pytest.raises(RunError, match=message):
        train(TrainArgs(**{**TINY, **overrides}, run_dir=finished_run, resume=True))
    assert snapshot(finished_run) == before


def test_the_cli_reports_bad_protection_kwargs_without_a_traceback(tmp_path, capsys):
    from contenv_cli.train import main

    code = main(["--scenario", "contenv/Sequence-v0", "--tasks", "copy(p=1)", "--protection", "ewc",
                 "--protection-kwargs", '{"no_such_key": 1}', "--run-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --protection-kwargs") and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- SB3 callback


def _sb3_learn(run_dir, steps=40, model=None, **callback_kwargs):
    from stable_baselines3 import SAC

    from contenv.evaluation.sb3 import ContinualEvalCallback

    env = gym.make("contenv/Sequence-v0", tasks=["copy(p=1)", "copy(p=2)"], steps_per_task=40)
    if model is None:
        model = SAC("MlpPolicy", env, learning_starts=10, policy_kwargs={"net_arch": [8]}, seed=0, device="cpu")
    else:
        model.set_env(env)
        env.unwrapped.load_state_dict({**env.unwrapped.state_dict(), "global_step": model.num_timesteps})
    callback = ContinualEvalCallback(run_dir, eval_every=20, episodes=1, deterministic_episodes=0, **callback_kwargs)
    model.learn(steps, callback=callback, reset_num_timesteps=not callback_kwargs.get("resume", False))
    return model


@pytest.fixture(scope="module")
def sb3_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sb3") / "run"
    return run_dir, _sb3_learn(run_dir)


def test_the_sb3_callback_refuses_an_existing_run_directory_before_writing(sb3_run):
    run_dir, _ = sb3_run
    before = snapshot(run_dir)
    with pytest.raises(FileExistsError, match="pass resume=True to continue the run in it"):
        _sb3_learn(run_dir, extra_config={"lr": 1.0})
    assert snapshot(run_dir) == before


def test_the_sb3_callback_refuses_a_resume_with_another_config(sb3_run):
    run_dir, model = sb3_run
    before = snapshot(run_dir)
    with pytest.raises(ValueError, match=r"differs from the run .*eval_every: 20 -> 10"):
        from contenv.evaluation.sb3 import ContinualEvalCallback

        env = gym.make("contenv/Sequence-v0", tasks=["copy(p=1)", "copy(p=2)"], steps_per_task=40)
        model.set_env(env)
        model.learn(10, reset_num_timesteps=False,
                    callback=ContinualEvalCallback(run_dir, eval_every=10, episodes=1, deterministic_episodes=0,
                                                   resume=True))
    assert snapshot(run_dir) == before


def test_the_sb3_callback_resumes_a_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    model = _sb3_learn(run_dir)
    assert load_run(run_dir).steps.tolist() == [0, 20, 40]
    config = json.loads((run_dir / "config.json").read_text())
    _sb3_learn(run_dir, steps=40, model=model, resume=True)
    assert json.loads((run_dir / "config.json").read_text()) == config
    run = load_run(run_dir)
    assert run.steps.tolist() == [0, 20, 40, 60, 80] and run.is_complete
    assert (run_dir / PROGRESS_FILE).read_text().count("\n40,") == 1
