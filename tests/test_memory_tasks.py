"""Memory tasks: they demand memory, their dials do what they say, they pass check_env."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from contenv.tasks.memory import RECALL, SHOW, CopyTask, MemoryTask, make_memory_task
from contenv.tasks.memory_policies import GuessPolicy, choice_action, memoryless_policy, remembering_policy
from contenv.tasks.registry import known_task_names, make_task

# spec -> chance level of the best memoryless policy (score = fraction correct)
TASKS = {
    "copy(p=1,i=0)": 0.25,
    "copy(p=3,i=5)": 0.25,
    "copy(p=2,i=2,mapping='1032')": 0.25,
    "repeat-first(d=0)": 0.25,
    "repeat-first(d=6)": 0.25,
    "repeat-first(d=3,mapping='3210')": 0.25,
    "tmaze(L=1)": 0.5,
    "tmaze(L=8)": 0.5,
    "tmaze(L=6,walk=True)": 0.5,
    "bits(n=1,d=0)": 0.5,
    "bits(n=5,d=3)": 0.5,
}


def play(env: MemoryTask, policy, episodes: int, seed: int = 0) -> list[dict]:
    """Run seeded episodes; one record per episode."""
    records = []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        policy.reset()
        record = {"length": 0, "recall": 0, "show": 0, "return": 0.0, "success_before_end": False}
        while True:
            record["recall"] += int(obs[RECALL] == 1.0)
            record["show"] += int(obs[SHOW] == 1.0)
            obs, reward, terminated, truncated, info = env.step(policy.act(obs))
            record["length"] += 1
            record["return"] += reward
            assert env.observation_space.contains(obs)
            if terminated or truncated:
                break
            record["success_before_end"] |= info["success"]
            assert "score" not in info
        record.update(success=info["success"], score=info["score"], terminated=terminated)
        records.append(record)
    return records


@pytest.mark.parametrize("spec", TASKS)
def test_remembering_policy_solves_every_episode(spec: str) -> None:
    env = make_task(spec)
    records = play(env, remembering_policy(env), episodes=50)
    assert all(r["success"] and r["score"] == 1.0 and r["terminated"] for r in records)
    assert not any(r["success_before_end"] for r in records)


@pytest.mark.parametrize("spec", TASKS)
def test_memoryless_policy_stays_at_chance(spec: str) -> None:
    env = make_task(spec)
    chance = TASKS[spec]
    records = play(env, memoryless_policy(env), episodes=400)
    mean_score = np.mean([r["score"] for r in records])
    # 400 episodes: the standard error is at most 0.025, so +-0.1 is a 4-sigma band.
    assert abs(mean_score - chance) < 0.1, (spec, mean_score)
    assert np.mean([r["success"] for r in records]) < chance + 0.1


# Every answer a fixed guess can give: 4 symbols, or 2 (left/right, bit 0/1).
GUESSES = [(spec, guess) for spec, chance in TASKS.items() for guess in range(round(1 / chance))]


@pytest.mark.parametrize("spec, guess", GUESSES)
def test_no_fixed_guess_beats_chance(spec: str, guess: int) -> None:
    env = make_task(spec)
    records = play(env, GuessPolicy(guess, walk=getattr(env, "walk", False)), episodes=400, seed=1000)
    assert abs(np.mean([r["score"] for r in records]) - TASKS[spec]) < 0.1


@pytest.mark.parametrize("spec", TASKS)
def test_recall_observation_carries_no_answer(spec: str) -> None:
    """At a recall step a reactive policy sees the same thing whatever the answer is."""
    env = make_task(spec)
    policy = remembering_policy(env)
    answers_by_obs: dict[bytes, set[int]] = {}
    for episode in range(100):
        obs, _ = env.reset(seed=episode)
        policy.reset()
        done = False
        while not done:
            action = policy.act(obs)
            if obs[RECALL] == 1.0:
                answers_by_obs.setdefault(obs.tobytes(), set()).add(int(np.argmax(action)))
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    # Every recall observation was followed by at least two different correct answers.
    assert all(len(answers) >= 2 for answers in answers_by_obs.values())


@pytest.mark.parametrize("p", [1, 2, 4])
@pytest.mark.parametrize("i", [0, 3, 7])
def test_copy_p_sets_load_and_i_sets_only_length(p: int, i: int) -> None:
    env = make_task(f"copy(p={p},i={i})")
    record = play(env, remembering_policy(env), episodes=1)[0]
    assert record["length"] == env.episode_length == 2 * p + i
    assert record["show"] == p and record["recall"] == env.num_recall_steps == p
    assert record["return"] == pytest.approx(1.0)


def test_copy_padding_changes_nothing_but_length() -> None:
    short, long = make_task("copy(p=3,i=0)"), make_task("copy(p=3,i=9)")
    obs_short, obs_long = [], []
    for env, out in ((short, obs_short), (long, obs_long)):
        obs, _ = env.reset(seed=7)
        out.append(obs)
        for _ in range(env.episode_length - 1):
            obs, *_ = env.step(choice_action(0))
            out.append(obs)
    # Same items shown, same recall block; the long episode only has 9 more blank steps.
    assert np.array_equal(np.stack(obs_short[:3]), np.stack(obs_long[:3]))
    assert not np.stack(obs_long[3:12]).any()
    assert np.array_equal(np.stack(obs_short[3:]), np.stack(obs_long[12:]))


@pytest.mark.parametrize(
    "spec, length, width",
    [
        ("repeat-first(d=0)", 2, 6),
        ("repeat-first(d=9)", 11, 6),
        ("tmaze(L=1)", 2, 6),
        ("tmaze(L=12)", 13, 6),
        ("bits(n=1,d=0)", 2, 8),
        ("bits(n=6,d=5)", 7, 18),
    ],
)
def test_length_and_width_follow_the_dials(spec: str, length: int, width: int) -> None:
    env = make_task(spec)
    record = play(env, remembering_policy(env), episodes=1)[0]
    assert record["length"] == env.episode_length == length
    assert record["recall"] == 1
    assert env.observation_space.shape == (width,)


def test_repeat_first_distractors_are_shown_but_not_flagged() -> None:
    env = make_task("repeat-first(d=20)")
    obs, _ = env.reset(seed=3)
    seen = [obs]
    for _ in range(20):
        obs, *_ = env.step(choice_action(0))
        seen.append(obs)
    seen = np.stack(seen)
    assert seen[:, SHOW].tolist() == [1.0] + [0.0] * 20
    assert (seen[1:, :4].sum(axis=1) == 1.0).all()  # a random symbol on every distractor step


def test_mapping_changes_only_the_answers() -> None:
    plain, mapped = make_task("copy(p=2,i=1)"), make_task("copy(p=2,i=1,mapping='1032')")
    for seed in range(5):
        assert np.array_equal(plain.reset(seed=seed)[0], mapped.reset(seed=seed)[0])
    records = play(mapped, remembering_policy(plain), episodes=50)
    assert all(r["score"] == 0.0 for r in records)  # a derangement: every plain answer is wrong


def test_tmaze_walk_truncates_when_the_agent_dawdles() -> None:
    env = make_task("tmaze(L=3,walk=True)")
    env.reset(seed=0)
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(choice_action(3))  # back: no progress
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == env.max_steps == 8
    assert info == {"success": False, "score": 0.0}
    assert total == pytest.approx(-1.0)


@pytest.mark.parametrize("spec", TASKS)
def test_check_env_without_warnings(spec: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make_task(spec), skip_render_check=True)


@pytest.mark.parametrize("spec", TASKS)
def test_deterministic_under_seed(spec: str) -> None:
    def trajectory(seed: int) -> np.ndarray:
        env = make_task(spec)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            out.append(np.append(obs, reward))
            done = terminated or truncated
        return np.concatenate(out)

    assert np.array_equal(trajectory(5), trajectory(5))
    assert any(not np.array_equal(trajectory(5), trajectory(s)) for s in range(6, 12))


def test_step_after_the_end_is_an_error() -> None:
    env = make_task("repeat-first(d=0)")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(choice_action(0))
    env.reset(seed=0)
    env.step(choice_action(0))
    env.step(choice_action(0))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(choice_action(0))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("copy(p=0)", r"p of task 'copy' must be an integer >= 1"),
        ("copy(i=-1)", r"i of task 'copy' must be an integer >= 0"),
        ("copy(p=1.5)", r"integer >= 1"),
        ("copy(p=True)", r"integer >= 1"),
        ("copy(q=2)", r"no dial\(s\) q; allowed dials: p \(default 3\), i \(default 0\), mapping"),
        ("copy(mapping='0012')", r"permutation of the symbols 0-3"),
        ("repeat-first(d=-1)", r"d of task 'repeat-first' must be an integer >= 0"),
        ("tmaze(L=0)", r"L of task 'tmaze' must be an integer >= 1"),
        ("tmaze(walk=2)", r"walk of task 'tmaze' must be True or False"),
        ("bits(n=0)", r"n of task 'bits' must be an integer >= 1"),
        ("bits(d=-2)", r"d of task 'bits' must be an integer >= 0"),
    ],
)
def test_bad_dials_raise_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_task(spec)


def test_unknown_memory_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="Did you mean: copy"):
        make_memory_task("copyy", {})


def test_registered_in_the_task_registry() -> None:
    assert {"copy", "repeat-first", "tmaze", "bits"} <= set(known_task_names())
    env = make_task("copy(p=2, i=3)", horizon=10, reward_version="v1")  # both ignored
    assert isinstance(env, CopyTask) and env.episode_length == 7
    assert env.task_spec == "copy(i=3,mapping='0123',p=2)"
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)


def test_copy_scenarios_separate_load_from_length() -> None:
    import contenv  # noqa: F401 - registers the scenario ids

    load = gym.make("contenv/CopySeq-v0", steps_per_task=50).unwrapped
    length = gym.make("contenv/PaddedCopySeq-v0", steps_per_task=50).unwrapped
    loads = [(load.task_env(k).p, length.task_env(k).p) for k in range(load.num_tasks)]
    lengths = [(load.task_env(k).episode_length, length.task_env(k).episode_length) for k in range(load.num_tasks)]
    assert [a for a, _ in loads] == [1, 2, 3, 4, 5] and {b for _, b in loads} == {1}
    assert all(a == b for a, b in lengths) and lengths[0][0] < lengths[-1][0]


@pytest.mark.parametrize("env_id", ["contenv/CopySeq-v0", "contenv/PaddedCopySeq-v0", "contenv/MemoryDistractor-v0", "contenv/Mixed-v0"])
def test_scenario_passes_check_env(env_id: str) -> None:
    import contenv  # noqa: F401 - registers the scenario ids

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(env_id, steps_per_task=50)
        check_env(env.unwrapped)


@pytest.mark.parametrize("spec", ["copy(p=3,i=2)", "tmaze(L=4,walk=True)", "bits(n=4,d=2)"])
def test_pickles_mid_episode(spec: str) -> None:
    import pickle

    env = make_task(spec)
    obs, _ = env.reset(seed=2)
    env.step(choice_action(2))
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(2):
        a, b = env.step(choice_action(2)), clone.step(choice_action(2))
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
