"""The multi-task baseline (contenv/multitask.py, agents/multitask.py, train --multitask)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import contenv  # noqa: F401  (registers the env ids)
from agents.multitask import MultiTaskSAC
from agents.training.run import RunError, TrainArgs, train
from agents.sac import SACConfig
from contenv.multitask import MultiTaskEnv
from contenv.evaluation.report import build_reports
from contenv.evaluation.rundir import load_run

torch.set_num_threads(1)
TASKS = ("repeat-first(d=2)", "copy(p=1,i=1)")


def sequence(steps_per_task=40):
    return gym.make("contenv/Sequence-v0", tasks=list(TASKS), steps_per_task=steps_per_task).unwrapped


def test_the_agent_samples_both_tasks_and_trains_each_task_head_and_alpha():
    env = MultiTaskEnv.from_sequence(sequence())
    config = SACConfig(hidden_sizes=(8,), batch_size=8, random_steps=10, update_after=10, update_every=10)
    agent = MultiTaskSAC(env, config, seed=0)
    seen = []
    agent.learn(80, callback=lambda a: seen.append(a.current_task))
    assert set(seen) == {0, 1} and agent.num_timesteps == 80 == env.total_steps
    assert agent.task_steps == 80  # one run-long phase: no task start after the first
    assert len(agent.replay) == 80  # never emptied
    tasks = agent.replay.sample(256).task[:, 0]
    assert 0.3 < tasks.float().mean().item() < 0.7  # batches mix both tasks
    assert (agent.log_alpha.detach() != config.init_log_alpha).all()  # each task's alpha trained
    assert agent.num_heads == 2


def test_episodes_cycle_through_the_tasks_and_only_the_end_is_a_task_switch():
    env = MultiTaskEnv.from_sequence(sequence(steps_per_task=30))
    starts, switches = [], []
    _, info = env.reset(seed=0)
    starts.append(info["task_index"])
    while env.global_step < env.total_steps:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        switches.append(info["task_switch"])
        if (terminated or truncated) and env.global_step < env.total_steps:
            _, info = env.reset()
            starts.append(info["task_index"])
    assert starts[:5] == [0, 1, 0, 1, 0] and env.current_task == env.task_names[starts[-1]]
    assert switches.count(True) == 1 and switches[-1] and info.get("sequence_done")
    state = env.state_dict()
    fresh = MultiTaskEnv.from_sequence(sequence(steps_per_task=30))
    fresh.load_state_dict(state)
    assert fresh.episodes == env.episodes and fresh.global_step == env.global_step


def test_train_multitask_writes_a_run_the_report_reads_as_multitask(tmp_path):
    args = TrainArgs(scenario="contenv/Sequence-v0", tasks=TASKS, steps_per_task=40, hidden_sizes=(8,), batch_size=8,
                     random_steps=10, update_after=10, update_every=10, eval_every=20, eval_episodes=1,
                     eval_deterministic_episodes=0, progress_bar=False, multitask=True, run_dir=tmp_path / "mt")
    run = load_run(train(args))
    assert run.method == "multitask" and run.config["multitask"] is True
    assert run.steps.tolist() == [20, 40, 60, 80]
    assert run.stochastic.shape == (4, 2) and np.isfinite(run.stochastic.numpy()).all()  # both tasks evaluated
    reports, errors = build_reports([run], final_points=2)  # two eval points per task window here
    assert not errors and [m.method for m in reports[0].methods] == ["multitask"]


def test_multitask_refuses_protection_and_seed_batching(tmp_path):
    with pytest.raises(RunError, match="without protection"):
        train(TrainArgs(scenario="contenv/Sequence-v0", tasks=TASKS, multitask=True, protection="ewc",
                        run_dir=tmp_path / "a"))
    with pytest.raises(RunError, match="no --seeds"):
        train(TrainArgs(scenario="contenv/Sequence-v0", tasks=TASKS, multitask=True, seeds="0-1",
                        run_dir=tmp_path / "b"))
    with pytest.raises(ValueError, match="without protection"):
        MultiTaskSAC(MultiTaskEnv.from_sequence(sequence()), protection="l2")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_stopped_and_resumed_multitask_run_equals_an_uninterrupted_one(tmp_path):
    common = dict(scenario="contenv/Sequence-v0", tasks=TASKS, steps_per_task=40, hidden_sizes=(8,), batch_size=8,
                  random_steps=10, update_after=10, update_every=10, eval_every=20, eval_episodes=1,
                  eval_deterministic_episodes=0, progress_bar=False, multitask=True)
    whole = load_run(train(TrainArgs(**common, run_dir=tmp_path / "whole")))
    train(TrainArgs(**common, run_dir=tmp_path / "parts", stop_at_step=30))
    parts = load_run(train(TrainArgs(**common, run_dir=tmp_path / "parts", resume=True)))
    assert parts.steps.tolist() == whole.steps.tolist()
    torch.testing.assert_close(parts.stochastic, whole.stochastic)
    assert parts.progress.filter(like="train/").equals(whole.progress.filter(like="train/"))
