"""Distractor triplets from a transfer matrix, memory distractors, and their scenarios."""

from __future__ import annotations

import csv
import json
import warnings
from importlib import resources
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from contenv.distractors import (
    distractor_sequence,
    insert_distractors,
    load_transfer_matrix,
    make_distractor_env,
    memory_distractor_triplet,
    rank_triplets,
)
from contenv.tasks.memory_policies import remembering_policy
from contenv.tasks.registry import make_task

CW10 = ["hammer", "push-wall", "faucet-close", "push-back", "stick-pull",
        "handle-press-side", "push", "shelf-place", "window-close", "peg-unplug-side"]  # fmt: skip


@pytest.fixture(scope="module")
def cells() -> dict[tuple[str, str], float]:
    """The shipped matrix read independently of the module: (source, target) -> FT."""
    text = resources.files("contenv").joinpath("data", "cw10_transfer_matrix.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return {(row["source"], target): float(row[target]) for row in rows for target in CW10}


def test_shipped_matrix_loads_in_cw10_order() -> None:
    matrix = load_transfer_matrix()
    assert list(matrix.tasks) == CW10 and matrix.values.shape == (10, 10)


def test_ranked_triplets_match_the_matrix_cells(cells: dict[tuple[str, str], float]) -> None:
    ranked = rank_triplets()
    assert len(ranked) == 10 * 9 * 8
    for t in ranked:
        assert len({t.source, t.distractor, t.target}) == 3
        assert t.ft_source_target == cells[t.source, t.target]
        assert t.ft_distractor_target == cells[t.distractor, t.target]
        assert t.ft_source_distractor == cells[t.source, t.distractor]
        assert t.score == pytest.approx(cells[t.source, t.target] - cells[t.distractor, t.target])
    scores = [t.score for t in ranked]
    assert scores == sorted(scores, reverse=True)
    best = ranked[0]
    assert (best.source, best.distractor, best.target) == ("push", "handle-press-side", "peg-unplug-side")
    assert best.score == pytest.approx(0.8138 + 0.0101)
    # The best triplet's B is the worst source for its C, its A the best source other than B.
    assert best.ft_distractor_target == min(cells[s, best.target] for s in CW10 if s not in (best.target, best.source))
    assert best.ft_source_target == max(cells[s, best.target] for s in CW10 if s != best.target)


def test_triplet_tasks_are_meta_world_v3_names() -> None:
    assert rank_triplets()[0].tasks == ["push-v3", "handle-press-side-v3", "peg-unplug-side-v3"]


def test_custom_matrix_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("source,reach-v3,copy(p=1),tmaze\nreach-v3,0,0.9,0.1\ncopy(p=1),0.5,0,0.8\ntmaze,-0.1,0.3,0\n")
    ranked = rank_triplets(str(path))
    assert len(ranked) == 6
    assert ranked[0].tasks == ["copy(p=1)", "reach-v3", "tmaze"]  # 0.8 - 0.1
    assert ranked[0].score == pytest.approx(0.7)


def test_malformed_matrix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("source,a,b\nb,0,1\na,1,0\n")
    with pytest.raises(ValueError, match="same tasks in rows and columns"):
        load_transfer_matrix(path)


def test_distractors_inserted_before_each_task(cells: dict[tuple[str, str], float]) -> None:
    sequence = insert_distractors(["hammer", "push", "window-close"], num_distractors=2)
    assert len(sequence) == 3 + 2 * 2
    assert sequence[0] == "hammer" and sequence[3] == "push" and sequence[6] == "window-close"
    for start, target in ((1, "push"), (4, "window-close")):
        chosen = sequence[start : start + 2]
        others = [s for s in CW10 if s not in chosen and s != target and s != sequence[start - 1]]
        assert max(cells[d, target] for d in chosen) <= min(cells[s, target] for s in others)


def test_distractor_sequence_keeps_the_triplet_ends() -> None:
    best = rank_triplets()[0]
    sequence = distractor_sequence(best, num_distractors=3)
    assert sequence[0] == "push-v3" and sequence[1] == "handle-press-side-v3" and sequence[-1] == "peg-unplug-side-v3"
    assert len(sequence) == 5 and len(set(sequence)) == 5


def test_memory_distractor_has_same_inputs_and_conflicting_answers() -> None:
    a, b, c = memory_distractor_triplet("copy", p=2, i=3)
    assert a == c == "copy(i=3,p=2)" and b == "copy(i=3,mapping='1032',p=2)"
    env_a, env_b = make_task(a), make_task(b)
    for seed in range(10):
        assert np.array_equal(env_a.reset(seed=seed)[0], env_b.reset(seed=seed)[0])
    policy = remembering_policy(env_a)
    for seed in range(20):
        obs, _ = env_b.reset(seed=seed)
        policy.reset()
        done = False
        while not done:
            obs, _, done, _, info = env_b.step(policy.act(obs))
        assert info["score"] == 0.0  # A's solution answers every item of B wrongly
    assert memory_distractor_triplet("repeat-first", d=7)[1] == "repeat-first(d=7,mapping='1032')"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "tmaze"}, "memory distractors exist for copy, repeat-first"),
        ({"mapping": "0123"}, "identity"),
        ({"mapping": "0113"}, "permutation"),
        ({"p": 0}, "integer >= 1"),
        ({"mapping": "1032", "q": 1}, r"no dial\(s\) q"),
    ],
)
def test_memory_distractor_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        memory_distractor_triplet(**kwargs)


def test_memory_distractor_scenario_is_the_constructed_triplet() -> None:
    data = json.loads(resources.files("scenarios").joinpath("memory_distractor.json").read_text())
    assert data["kwargs"]["tasks"] == memory_distractor_triplet("copy", p=2, i=4)


def test_make_distractor_env_from_rank_and_from_tasks() -> None:
    env = make_distractor_env(rank=0, steps_per_task=10)
    assert env.task_names == ["push-v3", "handle-press-side-v3", "peg-unplug-side-v3"]
    explicit = make_distractor_env(tasks=memory_distractor_triplet(), steps_per_task=10)
    assert explicit.task_names[1] == "copy(i=4,mapping='1032',p=2)"
    with pytest.raises(ValueError, match=r"rank must be an integer in 0\.\.719"):
        make_distractor_env(rank=720)


def test_distractor_scenario_passes_check_env() -> None:
    import contenv  # noqa: F401 - registers the scenario ids

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("contenv/Distractor-v0", steps_per_task=50)
        check_env(env.unwrapped)
    assert env.unwrapped.task_names == rank_triplets()[0].tasks
