"""ClonEx (agents/protection/clonex.py): best-return exploration over previous heads on a
task built so that one head is clearly best, and cloning inherited from Replay("bc")."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.protection import make_protection
from agents.protection.clonex import ClonEx
from agents.sac import SAC, SACConfig


class OneStepTasks(gym.Env):
    """Three tasks of one-step episodes; the reward is the first action coordinate.

    An actor whose head ``i`` outputs a mean action of ``targets[i]`` therefore earns
    about ``targets[i]`` per episode with that head: the best previous head is known.
    """

    def __init__(self, num_tasks: int = 3, steps_per_task: int = 20) -> None:
        self.num_tasks, self.steps_per_task, self.global_step = num_tasks, steps_per_task, 0
        self.layout = SimpleNamespace(task_width=1, num_tasks=num_tasks, task_id="onehot")
        self.total_steps = num_tasks * steps_per_task
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1 + num_tasks,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    @property
    def task(self) -> int:
        return min(self.global_step // self.steps_per_task, self.num_tasks - 1)

    def _obs(self) -> np.ndarray:
        return np.concatenate([[1.0], np.eye(self.num_tasks)[self.task]]).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {"task_index": self.task}

    def step(self, action):
        task = self.task
        self.global_step += 1
        info = {"task_index": task, "success": False, "task_switch": self.global_step % self.steps_per_task == 0}
        return self._obs(), float(action[0]), False, True, info


def clear_heads(agent: SAC, targets: list[float]) -> None:
    """Head ``i`` acts ``tanh(atanh(targets[i]))`` whatever it sees, almost deterministically."""
    with torch.no_grad():
        actor = agent.actor
        actor.mean.weight.zero_()
        actor.log_std.weight.zero_()
        actor.log_std.bias.fill_(-6.0)
        bias = actor.mean.bias.view(agent.num_heads, -1)
        for head, target in enumerate(targets):
            bias[head] = float(np.arctanh(target))


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_best_return_exploration_picks_the_clearly_best_previous_head(trunk):
    config = SACConfig(trunk=trunk, hidden_sizes=(8,), rnn_size=4, batch_size=4, seq_len=2, random_steps=20,
                       update_after=1_000)  # no updates: the heads stay as set
    method = ClonEx(memory_per_task=8)
    agent = SAC(OneStepTasks(), config, protection=method, seed=0)
    picks: list[int | None] = []
    agent.learn(40)  # tasks 0 and 1: uniform-random steps (task 0) / exploration with head 0 (task 1)
    clear_heads(agent, [-0.5, 0.9, 0.0])  # head 1 is clearly best for the reward a[0]
    agent.learn(20, callback=lambda a: picks.append(a._explore_task))  # task 2: explores with heads 0 and 1
    assert agent.current_task == 2
    assert picks[:3] == [0, 1, 1] and set(picks[2:]) == {1}  # each head once, then the best one
    assert method.head_returns[0] == pytest.approx([-0.5], abs=0.01)
    assert np.mean(method.head_returns[1]) == pytest.approx(0.9, abs=0.01) and len(method.head_returns[1]) >= 10
    assert method.memory_tasks == [0, 1]  # the cloning memory of Replay("bc"): every task but the last


def test_exploration_acts_with_the_chosen_head_not_random_actions():
    config = SACConfig(hidden_sizes=(8,), batch_size=4, random_steps=20, update_after=1_000)
    env = OneStepTasks(num_tasks=2)
    agent = SAC(env, config, protection=ClonEx(memory_per_task=8), seed=0)
    agent.learn(20)
    clear_heads(agent, [0.7, 0.0])
    rewards: list[float] = []
    agent.learn(20, callback=lambda a: rewards.append(a.last_episode_return))
    np.testing.assert_allclose(rewards, 0.7, atol=0.01)  # every random step of task 1 acted by head 0

    plain = SAC(OneStepTasks(num_tasks=2), config, protection=ClonEx(memory_per_task=8, exploration="random"), seed=0)
    plain.learn(20)
    clear_heads(plain, [0.7, 0.0])
    rewards = []
    plain.learn(20, callback=lambda a: rewards.append(a.last_episode_return))
    assert np.std(rewards) > 0.2  # uniform-random actions


def test_choice_rule_and_bad_arguments():
    method = ClonEx()
    method.head_returns = [[5.0], [], [9.0]]
    assert method.choose_head() == 1  # an untried head comes first
    method.head_returns = [[5.0, -3.0], [2.0], [2.0]]
    assert method.choose_head() == 1  # best mean (1.0 vs 2.0 vs 2.0): ties go to the earliest
    with pytest.raises(ValueError, match="exploration"):
        ClonEx(exploration="softmax")
    with pytest.raises(ValueError, match="do not combine"):
        make_protection("clonex+hnet")
    assert make_protection("clonex+ewc").names == ["clonex", "ewc"]


def test_a_resumed_agent_explores_like_an_uninterrupted_one():
    config = SACConfig(hidden_sizes=(8,), batch_size=4, random_steps=20, update_after=1_000)

    def run(stop_at=None):
        agent = SAC(OneStepTasks(), config, protection=ClonEx(memory_per_task=8), seed=0)
        agent.learn(40)
        clear_heads(agent, [-0.5, 0.9, 0.0])
        picks: list[int | None] = []
        if stop_at is None:
            agent.learn(20, callback=lambda a: picks.append(a._explore_task))
            return picks
        agent.learn(stop_at, callback=lambda a: picks.append(a._explore_task))
        state = agent.training_state()  # one-step episodes: every step is between episodes
        assert state["counters"]["last_episode_return"] == agent.last_episode_return is not None
        resumed = SAC(OneStepTasks(), config, protection=ClonEx(memory_per_task=8), seed=0)
        resumed.env.global_step = agent.env.global_step
        resumed.load_training_state(state)
        resumed._first_reset = False
        resumed.learn(20 - stop_at, callback=lambda a: picks.append(a._explore_task))
        return picks

    assert run(stop_at=1) == run(stop_at=3) == run() == [0, 1] + [1] * 18
