"""Contract 1: the scenario environment."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import contenv
from contenv import BudgetExhaustedError, ContinualEnv

SMALL = dict(steps_per_task=7, horizon=5)


def run_steps(env, n, seed=0):
    """Step with seeded random actions, resetting at episode ends; return observations and infos."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(n):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        out.append((obs, info))
        if terminated or truncated:
            if info.get("sequence_done"):
                break
            obs, info = env.reset()
            out.append((obs, info))
    return out


@pytest.mark.parametrize("env_id", contenv.registered_ids())
def test_check_env_on_every_registered_id(env_id):
    kwargs = {"steps_per_task": 50}
    if env_id == "contenv/Sequence-v0":
        kwargs["tasks"] = ["reach-v3", "push-v3"]
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    messages = [str(w.message) for w in caught if "observation" in str(w.message).lower()]
    assert messages == []


def test_switch_happens_exactly_at_steps_per_task():
    env = ContinualEnv(["reach-v3", "push-v3", "window-close-v3"], steps_per_task=12, horizon=5)
    env.reset(seed=0)
    indices, switches = [], []
    for step in range(1, 37):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        indices.append(info["task_index"])
        if info["task_switch"]:
            switches.append(step)
            assert truncated and not terminated
        if terminated or truncated:
            _, reset_info = env.reset()
            if step < 36:
                assert reset_info["task_index"] == step // 12
    assert switches == [12, 24, 36]
    assert indices == [0] * 12 + [1] * 12 + [2] * 12
    assert info.get("sequence_done") is True


def test_horizon_truncates_episodes_without_task_switch():
    env = ContinualEnv(["reach-v3"], steps_per_task=100, horizon=4)
    env.reset(seed=0)
    for _ in range(3):
        assert env.step(env.action_space.sample())[3] is False
    _, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert (terminated, truncated, info["task_switch"]) == (False, True, False)


def test_stepping_past_the_budget_raises_a_clear_error():
    env = ContinualEnv(["reach-v3"], steps_per_task=3, horizon=10)
    run_steps(env, 3)
    env.reset()
    with pytest.raises(BudgetExhaustedError, match="budget is spent: 1 tasks x 3 steps"):
        env.step(env.action_space.sample())


def test_step_after_episode_end_requires_reset():
    env = ContinualEnv(["reach-v3"], steps_per_task=10, horizon=2)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.step(env.action_space.sample())
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(env.action_space.sample())


def test_onehot_layout_and_hidden_task_id():
    env = ContinualEnv(["reach-v3", "push-v3"], task_id="onehot", **SMALL)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (41,) and obs[39:].tolist() == [1.0, 0.0]
    hidden = ContinualEnv(["reach-v3", "push-v3"], task_id="hidden", **SMALL)
    obs_h, _ = hidden.reset(seed=0)
    assert obs_h.shape == (39,)
    np.testing.assert_array_equal(obs_h, obs[:39])


def test_cw20_positions_are_their_own_tasks():
    env = gym.make("contenv/CW20-v0", steps_per_task=3).unwrapped
    assert env.num_tasks == 20 and env.observation_space.shape == (59,)
    assert env.task_names[10] == env.task_names[0] == "hammer-v3"
    assert len(env._envs) == 10  # one env per distinct task
    test_env = contenv.make_test_env(env, 10)
    obs, _ = test_env.reset(seed=0)
    assert obs[39 + 10] == 1.0 and obs[39:].sum() == 1.0


def test_same_seed_same_observations_and_different_seeds_differ():
    def trajectory(seed):
        env = gym.make("contenv/CW10-v0", **SMALL)
        return np.stack([o for o, _ in run_steps(env, 30, seed=seed)])

    np.testing.assert_array_equal(trajectory(3), trajectory(3))
    assert not np.array_equal(trajectory(3), trajectory(4))


def test_layouts_differ_between_resets():
    env = contenv.make_test_env("contenv/CW10-v0", position=6)  # push: object and goal random
    starts = np.stack([env.reset(seed=s)[0] for s in range(5)] + [env.reset()[0] for _ in range(5)])
    object_and_goal = np.concatenate([starts[:, 4:7], starts[:, 36:39]], axis=1)
    assert len(np.unique(object_and_goal.round(5), axis=0)) == 10


def test_pickle_round_trip_keeps_position_and_random_streams():
    env = gym.make("contenv/CW10-v0", **SMALL)
    run_steps(env, 9)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.global_step == env.unwrapped.global_step
    np.testing.assert_array_equal(clone.reset()[0], env.reset()[0])


def test_spec_round_trip_through_gym_make():
    env = gym.make("contenv/CW10-ORD2-v0", steps_per_task=11, horizon=7, task_id="hidden")
    again = gym.make(env.spec)
    assert again.unwrapped.task_names == env.unwrapped.task_names
    assert (again.unwrapped.steps_per_task, again.unwrapped.horizon, again.unwrapped.task_id) == (11, 7, "hidden")
    assert gym.make(env.spec.to_json() and gym.envs.registration.EnvSpec.from_json(env.spec.to_json())).unwrapped.steps_per_task == 11


def test_protocol_defaults_are_continual_world():
    spec = gym.spec("contenv/CW10-v0")
    assert spec.kwargs["steps_per_task"] == 1_000_000 and spec.kwargs["horizon"] == 200
    assert spec.kwargs["reward_version"] == "v2" and spec.kwargs["task_id"] == "onehot"
    assert len(gym.spec("contenv/CW20-v0").kwargs["tasks"]) == 20


def test_triplets_and_sequences():
    env = gym.make("contenv/CWTriplet-v0", index=10, steps_per_task=5)
    assert env.unwrapped.task_names == ["push-back-v3", "push-wall-v3", "push-v3"]
    pair = gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=5)
    assert pair.unwrapped.num_tasks == 2 and pair.spec.kwargs["tasks"] == ["reach-v3", "push-v3"]
    with pytest.raises(ValueError, match="index must be an integer in 0..10"):
        gym.make("contenv/CWTriplet-v0", index=11)


def test_observations_stay_inside_the_declared_space():
    env = gym.make("contenv/CW10-v0", steps_per_task=60, horizon=20).unwrapped
    space = env.observation_space
    for obs, _ in run_steps(env, 599):
        assert space.contains(obs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tasks=["hammer-v2"]), "unknown task 'hammer-v2'. Did you mean: hammer-v3"),
        (dict(tasks=[]), "non-empty list"),
        (dict(steps_per_task=0), "steps_per_task must be a positive integer"),
        (dict(steps_per_task=-5), "steps_per_task must be a positive integer"),
        (dict(horizon=0), "horizon must be a positive integer"),
        (dict(reward_version="v3"), "unknown reward_version 'v3'; allowed: v2, v1"),
        (dict(task_id="index"), "unknown task_id 'index'; allowed: onehot, hidden"),
    ],
)
def test_bad_input_gets_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        gym.make("contenv/CW10-v0", **kwargs)


def test_unknown_scenario_name_lists_close_matches():
    with pytest.raises(gym.error.NameNotFound, match="Did you mean: `CW10`"):
        gym.make("contenv/CW11-v0")


def test_sequence_without_tasks_and_v1_stick_pull_are_refused():
    with pytest.raises(ValueError, match="needs tasks="):
        gym.make("contenv/Sequence-v0")
    with pytest.raises(ValueError, match="not supported for stick-pull-v3"):
        gym.make("contenv/CW10-v0", reward_version="v1")
    env = gym.make("contenv/Sequence-v0", tasks=["push-v3"], reward_version="v1", steps_per_task=5)
    assert env.unwrapped.task_env(0).raw_env.reward_function_version == "v1"


def test_resume_position_through_state_dict():
    env = ContinualEnv(["reach-v3", "push-v3"], **SMALL)
    run_steps(env, 8)
    fresh = ContinualEnv(["reach-v3", "push-v3"], **SMALL)
    fresh.load_state_dict(env.state_dict())
    _, info = fresh.reset(seed=1)
    assert fresh.global_step == 8 and info["task_index"] == 1
    with pytest.raises(ValueError, match="another scenario"):
        ContinualEnv(["reach-v3"], **SMALL).load_state_dict(env.state_dict())
