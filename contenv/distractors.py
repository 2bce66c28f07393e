"""Distractor scenarios: does transfer from A to C survive a task B trained in between?

Two kinds of A -> B -> C sequences:

1. **From a transfer matrix** (rows = source trained first, columns = target; the shipped
   CW10 matrix of Continual World is the default). :func:`rank_triplets` scores every
   triplet of distinct tasks by

       score(A, B, C) = FT(A -> C) - FT(B -> C)

   high when A is a useful source for C and B is not. The score reads only column C:
   B's own learning (FT(A -> B), recorded in :class:`Triplet` for the reader) is
   unrelated to the question and does not enter the ranking; every task is trained on
   its own budget anyway. The diagonal (a task followed by itself) is never used, since
   A, B, C are distinct. :func:`insert_distractors` builds longer sequences by putting,
   before each task, the tasks that transfer worst to it.
2. **Memory distractors by construction** (:func:`memory_distractor_triplet`): A and C
   are the same memory task (``copy`` or ``repeat-first``), B sees exactly the same
   inputs but must answer through a conflicting ``mapping`` of the four symbols (a
   derangement by default, so every answer of A is wrong in B).

How to read them in a report: the quantity of interest is forward transfer FT on C
(the last position). Compare it with the transfer target, ``max_{j<i} FT(j, i)`` from
the matrix (here FT(A -> C), what C would gain right after A), and with FT(B -> C), what B
alone would give. FT on C near FT(A -> C) means A's knowledge survived B; near FT(B -> C)
(or 0) means B wiped it out. For memory distractors, FT(A -> C) is the self-transfer of a
task repeated, measured on the pair [A, C]; the matrix entries of the shipped CW10 data
do not cover memory tasks, so measure them with a short run.

Example:
    >>> best = rank_triplets()[0]
    >>> best.tasks
    ['push-v3', 'handle-press-side-v3', 'peg-unplug-side-v3']
    >>> round(best.ft_source_target, 4), round(best.ft_distractor_target, 4)
    (0.8138, -0.0101)
    >>> for spec in memory_distractor_triplet("copy", p=2, i=4):
    ...     print(spec)
    copy(i=4,p=2)
    copy(i=4,mapping='1032',p=2)
    copy(i=4,p=2)
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from importlib import resources
from itertools import permutations
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from contenv.tasks.memory import IDENTITY_MAPPING, MEMORY_TASKS, check_mapping, make_memory_task
from contenv.tasks.registry import format_task_spec

if TYPE_CHECKING:
    from contenv.continual import ContinualEnv

SHIPPED_CW10 = "cw10_transfer_matrix.csv"
DEFAULT_CONFLICTING_MAPPING = "1032"  # swaps 0<->1 and 2<->3: no symbol keeps its answer
_VERSIONED = re.compile(r"-v\d+$")


@dataclass(frozen=True)
class TransferMatrix:
    """Forward transfer ``values[s, t] = FT(tasks[s] -> tasks[t])``."""

    tasks: tuple[str, ...]
    values: np.ndarray

    def ft(self, source: str, target: str) -> float:
        return float(self.values[self.tasks.index(source), self.tasks.index(target)])


def load_transfer_matrix(path: str | os.PathLike[str] | None = None) -> TransferMatrix:
    """Read a CSV whose first column ``source`` names rows and whose header names targets.

    ``None`` loads the shipped CW10 matrix (Continual World authors' 2022 data).
    """
    if path is None:
        text = resources.files("contenv").joinpath("data", SHIPPED_CW10).read_text()
    else:
        with open(path, newline="") as handle:
            text = handle.read()
    rows = list(csv.reader(text.splitlines()))
    header, body = rows[0], [r for r in rows[1:] if r]
    targets = tuple(header[1:])
    sources = tuple(r[0] for r in body)
    if sources != targets:
        raise ValueError(f"a transfer matrix needs the same tasks in rows and columns, got rows {sources} and columns {targets}")
    return TransferMatrix(targets, np.array([[float(x) for x in r[1:]] for r in body]))


MatrixLike = Union[TransferMatrix, str, "os.PathLike[str]", None]


def as_matrix(matrix: MatrixLike) -> TransferMatrix:
    return matrix if isinstance(matrix, TransferMatrix) else load_transfer_matrix(matrix)


def as_task_spec(name: str) -> str:
    """Matrix names without a version (CW's ``"hammer"``) are Meta-World v3 tasks."""
    if "(" in name or "/" in name or _VERSIONED.search(name) or name in MEMORY_TASKS:
        return name
    return name + "-v3"


@dataclass(frozen=True)
class Triplet:
    """One ranked A -> B -> C triplet with the matrix cells behind its score."""

    source: str
    distractor: str
    target: str
    ft_source_target: float  # FT(A -> C)
    ft_distractor_target: float  # FT(B -> C)
    ft_source_distractor: float  # FT(A -> B): shown, not scored

    @property
    def score(self) -> float:
        return self.ft_source_target - self.ft_distractor_target

    @property
    def tasks(self) -> list[str]:
        """The triplet as a task sequence (Meta-World names get their ``-v3``)."""
        return [as_task_spec(t) for t in (self.source, self.distractor, self.target)]


def rank_triplets(matrix: MatrixLike = None) -> list[Triplet]:
    """Every triplet of distinct tasks, best distractor setting first (highest score)."""
    m = as_matrix(matrix)
    triplets = [
        Triplet(a, b, c, m.ft(a, c), m.ft(b, c), m.ft(a, b))
        for a, b, c in permutations(m.tasks, 3)
    ]
    # Ties broken by names so the order is reproducible.
    return sorted(triplets, key=lambda t: (-t.score, t.source, t.distractor, t.target))


def worst_sources(target: str, matrix: MatrixLike = None, exclude: Sequence[str] = (), count: int = 1) -> list[str]:
    """The ``count`` tasks that transfer worst to ``target`` (lowest FT(. -> target))."""
    m = as_matrix(matrix)
    candidates = [t for t in m.tasks if t != target and t not in exclude]
    if count > len(candidates):
        raise ValueError(f"asked for {count} distractors of {target!r} but only {len(candidates)} tasks are left")
    return sorted(candidates, key=lambda t: (m.ft(t, target), t))[:count]


def insert_distractors(tasks: Sequence[str], matrix: MatrixLike = None, num_distractors: int = 1) -> list[str]:
    """Put ``num_distractors`` tasks before every task but the first.

    The distractors before task Y are those with the lowest FT(. -> Y), excluding Y and
    the task just before the gap. Names are matrix names; the result keeps them as given.
    """
    m = as_matrix(matrix)
    out = [tasks[0]]
    for previous, task in zip(tasks, tasks[1:]):
        out += worst_sources(task, m, exclude=(previous,), count=num_distractors)
        out.append(task)
    return out


def distractor_sequence(triplet: Triplet, matrix: MatrixLike = None, num_distractors: int = 1) -> list[str]:
    """``[A, B, B2, ..., C]``: the triplet's B first, then the next-worst sources of C."""
    extra = worst_sources(
        triplet.target, matrix, exclude=(triplet.source, triplet.distractor), count=num_distractors - 1
    ) if num_distractors > 1 else []
    return [as_task_spec(t) for t in [triplet.source, triplet.distractor, *extra, triplet.target]]


def make_distractor_env(
    tasks: Sequence[str] | None = None,
    matrix: MatrixLike = None,
    rank: int = 0,
    num_distractors: int = 1,
    steps_per_task: int = 1_000_000,
    horizon: int = 200,
    task_id: str = "onehot",
    reward_version: str = "v2",
) -> "ContinualEnv":
    """Entry point of ``contenv/Distractor-v0``: explicit ``tasks``, or a ranked triplet.

    Args:
        tasks: the sequence to run as is; when given, ``matrix``, ``rank`` and
            ``num_distractors`` are unused.
        matrix: a :class:`TransferMatrix`, a CSV path, or None for the shipped CW10 matrix.
        rank: which triplet of :func:`rank_triplets` (0 = highest score).
        num_distractors: tasks between A and C (the triplet's B, then next-worst sources).
        steps_per_task, horizon, task_id, reward_version: passed to ContinualEnv.
    """
    from contenv.continual import ContinualEnv  # lazily: this module stays importable alone

    if tasks is None:
        ranked = rank_triplets(matrix)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < len(ranked):
            raise ValueError(f"rank must be an integer in 0..{len(ranked) - 1}, got {rank!r}")
        if isinstance(num_distractors, bool) or not isinstance(num_distractors, int) or num_distractors < 1:
            raise ValueError(f"num_distractors must be an integer >= 1, got {num_distractors!r}")
        tasks = distractor_sequence(ranked[rank], matrix, num_distractors)
    return ContinualEnv(
        list(tasks), steps_per_task=steps_per_task, horizon=horizon, task_id=task_id, reward_version=reward_version
    )


def memory_distractor_triplet(kind: str = "copy", mapping: str = DEFAULT_CONFLICTING_MAPPING, **dials: Any) -> list[str]:
    """``[A, B, C]`` memory specs: C = A, B = A with the answers remapped by ``mapping``.

    Args:
        kind: ``"copy"`` or ``"repeat-first"``.
        mapping: B's answer permutation; must differ from the identity ``'0123'``.
        **dials: the task's other dials (defaults: copy ``p=2, i=4``; repeat-first ``d=4``).

    Raises:
        ValueError: another kind, the identity mapping, or bad dials.
    """
    defaults = {"copy": {"p": 2, "i": 4}, "repeat-first": {"d": 4}}
    if kind not in defaults:
        raise ValueError(f"memory distractors exist for {', '.join(defaults)}; got {kind!r}")
    mapping = check_mapping(kind, mapping)
    if mapping == IDENTITY_MAPPING:
        raise ValueError(f"mapping {mapping!r} is the identity: B would be A, not a distractor")
    if "mapping" in dials:
        raise ValueError("A and C use the identity mapping; give B's mapping as `mapping`")
    base = {**defaults[kind], **dials}  # A and C keep the default (identity) mapping
    make_memory_task(kind, base)  # validates the dials with the task's own errors
    a = format_task_spec(kind, base)
    b = format_task_spec(kind, {**base, "mapping": mapping})
    return [a, b, a]
