"""Meta-World memory variants: the goal vanishes after k steps, and some tasks then need memory."""

import gymnasium as gym
import numpy as np
import pytest

import contenv
from contenv.evaluation import evaluate
from contenv.goal_memory import GoalRememberingScripted, MaskedScripted


def test_goal_is_visible_for_exactly_k_steps_and_objects_on_request():
    env = gym.make("contenv/CWMemory10-v0", visible_steps=3, hide="goal+object", steps_per_task=50)
    obs, _ = env.reset(seed=0)
    visible = [bool(np.any(obs[36:39]))]
    objects = [bool(np.any(obs[4:7]))]
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
        visible.append(bool(np.any(obs[36:39])))
        objects.append(bool(np.any(obs[4:7])))
    assert visible == [True, True, True, False, False, False]
    assert objects == visible
    assert env.observation_space.contains(obs)


def test_push_needs_the_goal_remembered_but_window_close_does_not():
    specs = contenv.position_specs("contenv/Sequence-v0", tasks=["push-v3(visible_steps=1)", "window-close-v3(visible_steps=1)"])
    kw = dict(episodes=6, deterministic_episodes=0, seed=0)
    masked = evaluate(MaskedScripted(specs), specs, **kw).stochastic.success
    remembering = evaluate(GoalRememberingScripted(specs), specs, **kw).stochastic.success
    assert masked[0] <= 0.2 and remembering[0] >= 0.8
    assert masked[1] == remembering[1] == 1.0


def test_bad_memory_dials():
    with pytest.raises(ValueError, match="visible_steps must be an integer >= 0"):
        gym.make("contenv/CWMemory10-v0", visible_steps=-1)
    with pytest.raises(ValueError, match="unknown hide 'all'"):
        gym.make("contenv/CWMemory10-v0", hide="all")
    with pytest.raises(ValueError, match="has no dial"):
        contenv.make_test_env("contenv/Sequence-v0", 0, tasks=["push-v3(visible=1)"])
