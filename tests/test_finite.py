"""Fault injection: NaN/inf rewards, observations, actions, losses and gradients never pass silently."""

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.training.checkpoint import read_checkpoint, save_checkpoint
from agents.training.finite import check_finite_state
from agents.training.run import TrainArgs, train
from agents.sac import SAC, SACConfig
from contenv.continual import ContinualEnv
from contenv.finite import NonFiniteError
from contenv.evaluation.rundir import load_run
from contenv.tasks.memory import CopyTask
from contenv.tasks.metaworld import MetaWorldTask
from contenv.tasks.registry import make_task

torch.set_num_threads(1)

SMALL = dict(scenario="contenv/Sequence-v0", steps_per_task=120, horizon=20, hidden_sizes=(16,), batch_size=8,
             random_steps=20, update_after=20, update_every=10, eval_every=40, eval_episodes=1,
             eval_deterministic_episodes=0, checkpoint_every=30, progress_bar=False)


def small_args(run_dir, **overrides):
    return TrainArgs(**{**SMALL, "run_dir": Path(run_dir), **overrides})


def all_finite(path):
    check_finite_state(read_checkpoint(path) if path.name == "checkpoint.pt" else torch.load(path, weights_only=False),
                       str(path))
    return True


def checkpoint_files(run_dir):
    return sorted((Path(run_dir) / "checkpoints").glob("*.pt"))


def inject_once(monkeypatch, cls, at_call, change):
    """Patch ``cls.step`` so that its ``at_call``-th call returns ``change(result)``."""
    original, calls = cls.step, {"n": 0}

    def step(self, action):
        result = original(self, action)
        calls["n"] += 1
        return change(self, result) if calls["n"] == at_call else result

    monkeypatch.setattr(cls, step.__name__, step)
    return calls


@pytest.mark.parametrize("bad", ["reward", "observation"])
def test_a_memory_task_that_returns_nan_stops_the_run_naming_task_step_and_value(tmp_path, monkeypatch, bad):
    def poison(self, result):
        obs, reward, terminated, truncated, info = result
        if bad == "reward":
            return obs, float("nan"), terminated, truncated, info
        obs = obs.copy()
        obs[1] = np.inf
        return obs, reward, terminated, truncated, info

    inject_once(monkeypatch, CopyTask, 75, poison)
    # calls 1-40 train, 41-42 evaluate (at step 40), so call 75 is training step 73
    with pytest.raises(NonFiniteError, match=r"task 'copy\(p=1\)' \(position 0\) returned a non-finite .*at step 73") as err:
        train(small_args(tmp_path / "run", tasks=("copy(p=1)",)))
    assert ("reward nan" if bad == "reward" else "inf") in str(err.value)
    files = checkpoint_files(tmp_path / "run")
    assert files, "the checkpoints taken before the fault stay"
    assert all(all_finite(f) for f in files)
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint.pt")
    assert state["step"] < 73


def test_a_metaworld_blow_up_ends_the_episode_is_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    def blow_up(self, result):
        obs, reward, terminated, truncated, info = result
        return np.full_like(obs, np.nan), reward, terminated, truncated, info

    original = MetaWorldTask.step
    calls = {"n": 0}

    def raw_step_patch(self, action):  # poison the simulator's output, below the task's own handling
        inner = self._env
        real = inner.step
        calls["n"] += 1
        if calls["n"] == 33:
            inner.step = lambda a: blow_up(self, real(a))
        try:
            return original(self, action)
        finally:
            inner.__dict__.pop("step", None)

    monkeypatch.setattr(MetaWorldTask, "step", raw_step_patch)
    run_dir = train(small_args(tmp_path / "run", tasks=("reach-v3",)))
    run = load_run(run_dir)
    import pandas as pd

    progress = pd.read_csv(run_dir / "progress.csv")
    assert progress["train/nonfinite_episodes"].sum() == 1
    assert run.steps.tolist()[-1] == 120  # the run went on to its end
    files = checkpoint_files(run_dir)
    assert all(all_finite(f) for f in files)
    replay = read_checkpoint(run_dir / "checkpoints" / "checkpoint.pt")["agent"]["replay"]
    assert all(np.isfinite(v).all() for v in replay.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f")


def test_the_blown_up_step_is_not_stored_and_a_recurrent_replay_starts_a_new_episode(monkeypatch):
    env = ContinualEnv(["reach-v3"], steps_per_task=60, horizon=20)
    agent = SAC(env, SACConfig(trunk="gru", hidden_sizes=(8,), rnn_size=8, batch_size=2, seq_len=4,
                               random_steps=60, update_after=1000), seed=0)
    real = MetaWorldTask.step
    calls = {"n": 0}

    def step(self, action):
        calls["n"] += 1
        obs, reward, terminated, truncated, info = real(self, action)
        if calls["n"] == 7:  # what the task returns after a blow-up (contenv.finite)
            return obs, 0.0, False, True, {**info, "nonfinite": "observation nan"}
        return obs, reward, terminated, truncated, info

    monkeypatch.setattr(MetaWorldTask, "step", step)
    agent.learn(30)
    assert agent.replay.size == 29  # 30 steps, the flagged one dropped
    assert agent.replay.episode_end[5] == 6  # its episode closed after the 6 stored steps
    assert agent.replay.episode_start[6] == 6  # the next step began a new episode
    assert agent.pop_metrics()["train/nonfinite_episodes"] == 1.0


def test_metaworld_task_truncates_on_a_nan_state():
    task = MetaWorldTask("reach-v3", horizon=20)
    obs, _ = task.reset(seed=0)
    task._env.step = lambda a: (np.full(39, np.nan), 0.0, False, False, {"success": 0.0})
    next_obs, reward, terminated, truncated, info = task.step(np.zeros(4))
    assert truncated and not terminated and reward == 0.0 and info["nonfinite"]
    assert np.array_equal(next_obs, obs)  # the last finite observation


@pytest.mark.parametrize("action, message", [(np.zeros(3), "shape"), (np.zeros((1, 4)), "shape"),
                                             (np.array([0.0, np.nan, 0.0, 0.0]), "non-finite"),
                                             (np.array([np.inf, 0.0, 0.0, 0.0]), "non-finite")])
@pytest.mark.parametrize("make", [lambda: ContinualEnv(["copy(p=1)"], steps_per_task=10),
                                  lambda: make_task("copy(p=1)"), lambda: make_task("tmaze(L=2,walk=True)"),
                                  lambda: MetaWorldTask("reach-v3")],
                         ids=["continual", "memory", "tmaze-walk", "metaworld"])
def test_bad_actions_to_any_task_env_are_refused(make, action, message):
    env = make()
    env.reset(seed=0)
    with pytest.raises(NonFiniteError, match=message):
        env.step(action)


def _tiny_agent(**config):
    env = ContinualEnv(["copy(p=1)"], steps_per_task=200)
    return SAC(env, SACConfig(hidden_sizes=(8,), batch_size=4, random_steps=5, update_after=5, update_every=5,
                              **config), seed=0)


def test_predict_refuses_an_observation_of_the_wrong_width_or_with_nan():
    agent = _tiny_agent()
    width = agent.spec.obs_dim
    with pytest.raises(ValueError, match=f"width {width}"):
        agent.predict(np.zeros(width + 1, dtype=np.float32))
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        agent.predict(np.full(width, np.nan, dtype=np.float32))
    action, _ = agent.predict(np.zeros(width, dtype=np.float32))
    assert action.shape == (4,)


def _weights(agent):
    return [p.detach().clone() for p in agent.trainable_parameters()]


@pytest.mark.parametrize("fault", ["loss", "gradient"])
def test_a_non_finite_loss_or_gradient_stops_the_run_before_any_weight_changes(tmp_path, monkeypatch, fault):
    original, calls, before = SAC.compute_loss, {"n": 0}, {}

    def compute_loss(self, batch, include_protection=True):
        loss, metrics = original(self, batch, include_protection)
        calls["n"] += 1
        if calls["n"] == 40:
            before["weights"] = _weights(self)
            before["adam"] = {k: v.clone() for k, v in self.optimizer.state_dict()["state"][0].items()}
            before["target"] = [p.clone() for p in self.target_critic.parameters()]
            if fault == "loss":
                metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
                loss = loss * float("nan")
            else:  # finite value, NaN gradient: d sqrt(x)/dx at 0 is inf, times 0
                loss = loss + (self.log_alpha * 0.0).sum().sqrt()
        return loss, metrics

    monkeypatch.setattr(SAC, "compute_loss", compute_loss)
    agents = []
    monkeypatch.setattr(SAC, "pop_metrics", lambda self, _orig=SAC.pop_metrics: (agents.append(self), _orig(self))[1])
    match = r"update \d+ at env step \d+ \(task 0\): " + ("non-finite loss \\(loss=nan, critic_loss=nan\\)"
                                                        if fault == "loss" else "non-finite gradient of log_alpha")
    with pytest.raises(NonFiniteError, match=match):
        train(small_args(tmp_path / "run", tasks=("copy(p=1)",), update_every=5, eval_every=20))
    agent = agents[-1]
    assert all(torch.equal(a, b) for a, b in zip(_weights(agent), before["weights"]))
    assert all(torch.equal(a, b) for a, b in zip(agent.target_critic.parameters(), before["target"]))
    adam = agent.optimizer.state_dict()["state"][0]
    assert all(torch.equal(adam[k], v) for k, v in before["adam"].items())
    files = checkpoint_files(tmp_path / "run")
    assert files and all(all_finite(f) for f in files)


def test_the_checkpoint_writer_refuses_nan_and_keeps_the_last_good_file(tmp_path):
    agent = _tiny_agent()
    agent.learn(20)
    good = tmp_path / "checkpoint.pt"
    save_checkpoint(good, agent)
    agent.save(tmp_path / "agent.pt")
    saved = good.read_bytes(), (tmp_path / "agent.pt").read_bytes()
    with torch.no_grad():
        next(agent.actor.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"refusing to write checkpoint .*actor\..* non-finite"):
        save_checkpoint(good, agent)
    with pytest.raises(NonFiniteError, match=r"refusing to write .*agent.pt: actor\."):
        agent.save(tmp_path / "agent.pt")
    assert (good.read_bytes(), (tmp_path / "agent.pt").read_bytes()) == saved
    assert read_checkpoint(good)["step"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pt", "checkpoint.pt"]  # no temporary left
