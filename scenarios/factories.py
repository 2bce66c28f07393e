"""Entry points for scenarios whose task list is computed from their kwargs.

Example:
    >>> from scenarios.factories import cw_triplet_tasks
    >>> cw_triplet_tasks(0)
    ['push-v3', 'window-close-v3', 'hammer-v3']
"""

from __future__ import annotations

from typing import Any, Sequence

from contenv.continual import ContinualEnv
from scenarios import load_data


def cw_triplets() -> list[dict[str, Any]]:
    """The published A -> B -> C triplets with their labels (good, unclear, bad)."""
    return load_data("cw_triplets")["triplets"]


def cw_triplet_tasks(index: int) -> list[str]:
    triplets = cw_triplets()
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(triplets):
        raise ValueError(f"CWTriplet index must be an integer in 0..{len(triplets) - 1}, got {index!r}")
    return list(triplets[index]["tasks"])


def make_cw_triplet_env(index: int = 0, **kwargs: Any) -> ContinualEnv:
    """``contenv/CWTriplet-v0``: the ``index``-th published triplet as a 3-task sequence."""
    return ContinualEnv(cw_triplet_tasks(index), **kwargs)


def memory_variant(task: str, visible_steps: int, hide: str = "goal") -> str:
    """The spec of ``task`` whose goal (and objects) vanish after ``visible_steps`` steps."""
    dials = f"visible_steps={int(visible_steps)}" + (f",hide={hide!r}" if hide != "goal" else "")
    return f"{task}({dials})"


def make_cw_memory_env(base: str = "contenv/CW10-v0", visible_steps: int = 1, hide: str = "goal", **kwargs: Any) -> ContinualEnv:
    """``contenv/CWMemory10-v0``: a CW sequence whose goal is seen only in the first ``visible_steps`` steps."""
    from scenarios import load_scenarios

    tasks = load_scenarios()[base].kwargs["tasks"]
    return ContinualEnv([memory_variant(t, visible_steps, hide) for t in tasks], **kwargs)


def make_sequence_env(tasks: Sequence[str] | None = None, **kwargs: Any) -> ContinualEnv:
    """``contenv/Sequence-v0``: any list of tasks, given as ``tasks=[...]``."""
    if tasks is None:
        raise ValueError("contenv/Sequence-v0 needs tasks=[...], e.g. gym.make('contenv/Sequence-v0', tasks=['reach-v3'])")
    return ContinualEnv(list(tasks), **kwargs)


def remapped_memory_tasks(num_tasks: int = 50, kind: str = "copy", seed: int = 0, **dials: Any) -> list[str]:
    """``num_tasks`` specs of one memory task whose answer mapping changes at every task.

    Each task's mapping is drawn uniformly among the *derangements* of the previous one
    (every answer of task t is wrong in task t + 1), the first among all permutations;
    inputs never change, so only what the answers mean has to be relearned, like the
    shuffled labels of Dohare et al.'s continual ImageNet/MNIST variants.

    Example:
        >>> remapped_memory_tasks(3, p=1, i=0)
        ["copy(i=0,mapping='3102',p=1)", "copy(i=0,mapping='1320',p=1)", "copy(i=0,mapping='2031',p=1)"]
    """
    import itertools

    import numpy as np

    from contenv.tasks.memory import make_memory_task
    from contenv.tasks.registry import format_task_spec

    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    if kind not in ("copy", "repeat-first"):
        raise ValueError(f"answer mappings exist for the memory tasks copy and repeat-first; got {kind!r}")
    if "mapping" in dials:
        raise ValueError("the mappings are drawn per task; do not give `mapping`")
    base = {**({"p": 1, "i": 0} if kind == "copy" else {"d": 0}), **dials}
    make_memory_task(kind, base)  # the task's own errors for bad dials
    rng = np.random.default_rng(seed)
    permutations = ["".join(p) for p in itertools.permutations("0123")]
    mappings = [permutations[rng.integers(len(permutations))]]
    for _ in range(num_tasks - 1):
        previous = mappings[-1]
        deranged = [m for m in permutations if all(a != b for a, b in zip(m, previous))]
        mappings.append(deranged[rng.integers(len(deranged))])
    return [format_task_spec(kind, {**base, "mapping": m}) for m in mappings]


def make_remapped_memory_env(num_tasks: int = 50, kind: str = "copy", seed: int = 0, dials: dict[str, Any] | None = None,
                             **kwargs: Any) -> ContinualEnv:
    """``contenv/RemappedMemory-v0``: :func:`remapped_memory_tasks` as a sequence."""
    return ContinualEnv(remapped_memory_tasks(num_tasks, kind, seed, **(dials or {})), **kwargs)


def make_repeated_env(base: str = "contenv/CW10-v0", repeats: int = 5, **kwargs: Any) -> ContinualEnv:
    """``contenv/CW10x5-v0``: the task list of ``base`` repeated ``repeats`` times in a row."""
    from scenarios import load_scenarios

    scenarios = load_scenarios()
    if base not in scenarios or "tasks" not in scenarios[base].kwargs:
        listed = sorted(k for k, s in scenarios.items() if "tasks" in s.kwargs)
        raise ValueError(f"base must be a scenario with a fixed task list, one of {listed}; got {base!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    return ContinualEnv(list(scenarios[base].kwargs["tasks"]) * repeats, **kwargs)
