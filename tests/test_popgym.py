"""POPGym adapter: spaces, check_env, score/success, errors (needs the `popgym` extra)."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from contenv.tasks.memory_policies import choice_action
from contenv.tasks.popgym import INSTALL_HINT, make_popgym_task
from contenv.tasks.registry import make_task

# The module's tests need POPGym; only the "not installed" test runs without it.
requires_popgym = pytest.mark.skipif(importlib.util.find_spec("popgym") is None, reason="popgym is not installed")

NAMES = [
    "popgym/RepeatFirstEasy",
    "popgym/RepeatPreviousEasy",
    "popgym/AutoencodeEasy",
    "popgym/PositionOnlyCartPoleEasy",
    "popgym/VelocityOnlyCartPoleEasy",
    "popgym/PositionOnlyPendulumEasy",
    "popgym/HigherLowerEasy",
]


def run(env: gym.Env, act, seed: int) -> tuple[list[dict], list[np.ndarray]]:
    obs, info = env.reset(seed=seed)
    infos, observations = [info], [obs]
    while True:
        obs, reward, terminated, truncated, info = env.step(act(obs))
        infos.append(info)
        observations.append(obs)
        if terminated or truncated:
            return infos, observations


@requires_popgym
@pytest.mark.parametrize("name", NAMES)
def test_check_env_and_unified_spaces(name: str) -> None:
    env = make_task(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
    space = env.observation_space
    assert len(space.shape) == 1 and space.dtype == np.float32
    assert np.isfinite(space.low).all() and np.isfinite(space.high).all() and (space.low < space.high).all()


@requires_popgym
@pytest.mark.parametrize("name", NAMES)
def test_random_episodes_stay_in_bounds_and_score(name: str) -> None:
    env = make_task(name)
    env.action_space.seed(0)
    for seed in range(3):
        infos, observations = run(env, lambda obs: env.action_space.sample(), seed)
        assert all(env.observation_space.contains(o) for o in observations)
        assert not any(i["success"] for i in infos[:-1]) and all("score" not in i for i in infos[:-1])
        assert 0.0 <= infos[-1]["score"] <= 1.0 and isinstance(infos[-1]["success"], bool)


def _suit(obs: np.ndarray) -> int:
    return int(np.argmax(obs[-4:]))


@requires_popgym
def test_repeat_first_solved_through_the_adapter() -> None:
    env = make_task("popgym/RepeatFirstEasy")
    for seed in range(3):
        first = []
        infos, _ = run(env, lambda obs: choice_action(first.append(_suit(obs)) or first[0]), seed)
        assert infos[-1] == {"success": True, "score": 1.0}


@requires_popgym
def test_repeat_previous_solved_through_the_adapter() -> None:
    env = make_task("popgym/RepeatPrevious(k=2)")
    seen: list[int] = []

    def act(obs: np.ndarray) -> np.ndarray:
        seen.append(_suit(obs))
        return choice_action(seen[-2] if len(seen) >= 2 else 0)

    infos, _ = run(env, act, seed=0)
    assert infos[-1]["score"] == pytest.approx(1.0) and infos[-1]["success"]


@requires_popgym
def test_autoencode_solved_through_the_adapter_and_guessing_is_not() -> None:
    """Autoencode: cards are shown in "watch" mode; in "play" mode recite them reversed."""
    env = make_task("popgym/AutoencodeEasy")
    stack: list[int] = []
    playing = [False]

    def act(obs: np.ndarray) -> np.ndarray:
        watch = obs[1] == 1.0  # one-hot of POPGym's mode: index 1 is WATCH
        if watch or not playing[0]:
            stack.append(_suit(obs))  # the first "play" observation still shows the last card
        playing[0] = not watch
        return choice_action(stack.pop()) if playing[0] else choice_action(0)

    infos, _ = run(env, act, seed=4)
    assert infos[-1] == {"success": True, "score": 1.0}
    guess_infos, _ = run(env, lambda obs: choice_action(0), seed=4)
    assert 0.1 < guess_infos[-1]["score"] < 0.4 and not guess_infos[-1]["success"]


@requires_popgym
def test_continuous_actions_are_rescaled_to_the_task_bounds() -> None:
    env = make_task("popgym/PositionOnlyPendulumEasy")
    low, high = env.inner.action_space.low, env.inner.action_space.high
    assert env._decode(np.array([-1.0, 0.3, 0.3, 0.3])) == pytest.approx(low)
    assert env._decode(np.array([1.0, -1.0, -1.0, -1.0])) == pytest.approx(high)


@requires_popgym
def test_seeded_episodes_are_deterministic() -> None:
    env = make_task("popgym/AutoencodeEasy")
    a = run(env, lambda obs: choice_action(1), seed=11)[1]
    b = run(env, lambda obs: choice_action(1), seed=11)[1]
    assert np.array_equal(np.stack(a), np.stack(b))


@requires_popgym
@pytest.mark.parametrize(
    "spec, message",
    [
        ("popgym/BattleshipEasy", r"MultiDiscrete\(\[8 8\]\), which does not fit: .*at most 4 choices"),
        ("popgym/CountRecallEasy", r"Discrete\(27\), which does not fit"),
        ("popgym/MultiarmedBanditEasy", r"Discrete\(10\), which does not fit"),
        ("popgym/StatelessCartPoleEasy", r"unknown POPGym task .*Did you mean: .*popgym/PositionOnlyCartPoleEasy"),
        ("popgym/RepeatPrevious(q=2)", r"no dial\(s\) q; allowed dials: num_decks, k, success_threshold"),
        ("popgym/RepeatFirstEasy(success_threshold=2.0)", r"success_threshold .* in \[-1, 1\]"),
    ],
)
def test_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_task(spec)


@requires_popgym
def test_success_threshold_dial() -> None:
    strict = make_task("popgym/RepeatFirstEasy(success_threshold=1.0)")
    lenient = make_task("popgym/RepeatFirstEasy(success_threshold=-1.0)")
    guess = lambda obs: choice_action(0)  # noqa: E731
    assert not run(strict, guess, seed=0)[0][-1]["success"]
    assert run(lenient, guess, seed=0)[0][-1]["success"]


@requires_popgym
def test_popgym_scenario_passes_check_env() -> None:
    import contenv  # noqa: F401 - registers the scenario ids

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("contenv/POPGymSeq-v0", steps_per_task=50)
        check_env(env.unwrapped)
    assert env.unwrapped.task_names[0] == "popgym/RepeatFirstEasy"


def test_building_without_popgym_asks_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("popgym", "popgym.envs", "popgym.core", "popgym.core.env"):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: the import fails
    with pytest.raises(ImportError, match=r"pip install 'contenv\[popgym\]'") as err:
        make_popgym_task("popgym/RepeatFirstEasy", {})
    assert str(err.value) == INSTALL_HINT


@requires_popgym
def test_pickles_mid_episode() -> None:
    import pickle

    env = make_task("popgym/AutoencodeEasy")
    env.reset(seed=0)
    env.step(choice_action(0))
    clone = pickle.loads(pickle.dumps(env))
    a, b = env.step(choice_action(1)), clone.step(choice_action(1))
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def test_flattener_one_hots_discrete_parts_and_bounds_infinite_boxes() -> None:
    from contenv.tasks.popgym import UNBOUNDED_LIMIT, make_flattener

    space = gym.spaces.Tuple(
        (gym.spaces.MultiDiscrete([2, 3]), gym.spaces.Discrete(3, start=1), gym.spaces.Box(-np.inf, np.inf, (2,)))
    )
    flatten = make_flattener(space)
    out = flatten(((1, 2), 3, np.array([100.0, -1.0])))
    assert out.tolist() == [0, 1, 0, 0, 1, 0, 0, 1, UNBOUNDED_LIMIT, -1.0]
    assert (flatten.low < flatten.high).all() and np.isfinite(flatten.low).all()
