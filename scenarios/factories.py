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
