"""Which Meta-World tasks need the goal remembered once it is hidden?

In a memory variant (``visible_steps=k``) the goal is zeroed after ``k`` steps. A task
*needs the goal* if Meta-World's scripted expert fails when it sees the masked
observation but succeeds when it remembers the goal from the first observation; a task
whose goal is fixed, or irrelevant to the expert, is a memory task in name only.

Example:
    >>> import contenv
    >>> specs = contenv.position_specs("contenv/Sequence-v0", tasks=["window-close-v3(visible_steps=1)"])
    >>> from contenv.evaluation import evaluate
    >>> evaluate(GoalRememberingScripted(specs), specs, episodes=1, deterministic_episodes=0).stochastic.success.tolist()
    [1.0]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from contenv.evaluation import ScriptedPolicy
from contenv.position_env import PositionSpec
from contenv.tasks.metaworld import GOAL
from contenv.tasks.registry import parse_task_spec


def base_task_names(specs: Sequence[PositionSpec]) -> list[str]:
    return [parse_task_spec(s.task_name)[0] for s in specs]


class MaskedScripted(ScriptedPolicy):
    """The scripted expert of each position, fed the masked observation as it is."""

    def __init__(self, specs: Sequence[PositionSpec]) -> None:
        super().__init__(base_task_names(specs))


class GoalRememberingScripted(ScriptedPolicy):
    """The scripted expert, with the goal of its first observation written back every step."""

    def __init__(self, specs: Sequence[PositionSpec]) -> None:
        super().__init__(base_task_names(specs))

    def act(self, obs, state, episode_start, deterministic, positions, rewards=None):
        goals = np.zeros((len(obs), 3), dtype=np.float32) if state is None else state.copy()
        goals[episode_start] = obs[episode_start][:, GOAL]
        seen = obs.copy()
        seen[:, GOAL] = goals
        actions, _ = super().act(seen, None, episode_start, deterministic, positions)
        return actions, goals
