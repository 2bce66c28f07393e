"""Meta-World's own scripted policies, driven through contenv's observation layout.

They are the evidence that our wrappers keep the tasks solvable, and a cheap policy for
testing evaluators. A scripted policy reads the raw 39-dim Meta-World observation, which
is the first 39 entries of every contenv observation of a Meta-World task.

Example:
    >>> import contenv
    >>> env = contenv.make_test_env("contenv/CW10-v0", position=8)
    >>> policy = ScriptedMetaWorldPolicy("window-close-v3")
    >>> obs, info = env.reset(seed=1)
    >>> for _ in range(200):
    ...     obs, reward, terminated, truncated, info = env.step(policy.act(obs))
    >>> info["success"]
    True
"""

from __future__ import annotations

import importlib

import numpy as np

from contenv.tasks.metaworld import OBS_DIM, metaworld_task_names
from contenv.tasks.registry import unknown_name_error


def policy_class_name(task_name: str) -> str:
    """``"peg-unplug-side-v3"`` -> ``"SawyerPegUnplugSideV3Policy"``."""
    return "Sawyer" + "".join(part.capitalize() for part in task_name.split("-")) + "Policy"


class ScriptedMetaWorldPolicy:
    """The ``metaworld.policies`` expert of one task, fed contenv observations."""

    def __init__(self, task_name: str) -> None:
        if task_name not in metaworld_task_names():
            raise unknown_name_error("Meta-World task", task_name, metaworld_task_names())
        policies = importlib.import_module("metaworld.policies")
        self.task_name = task_name
        self._policy = getattr(policies, policy_class_name(task_name))()

    def act(self, obs: np.ndarray) -> np.ndarray:
        raw = np.asarray(obs, dtype=np.float64)[:OBS_DIM]
        return np.clip(self._policy.get_action(raw), -1.0, 1.0).astype(np.float32)
