"""The observation layout every position of a sequence shares.

A sequence mixes tasks whose observations differ in width (Meta-World: 39, a copy task:
a few symbols). The agent sees one fixed layout for the whole sequence:

    [ task observation, zero-padded to the widest task | one-hot of the position ]

with the one-hot left out when ``task_id="hidden"``. Training env and test envs build
their observations through the same :class:`ObservationLayout`, so they cannot drift.

Example:
    >>> import numpy as np
    >>> layout = ObservationLayout(task_width=3, num_tasks=2, task_id="onehot",
    ...                            low=np.full(3, -1.0), high=np.full(3, 1.0))
    >>> layout.build(np.array([0.5, -0.5]), position=1).tolist()
    [0.5, -0.5, 0.0, 0.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

TASK_ID_MODES = ("onehot", "hidden")


def check_task_id(task_id: str) -> str:
    if task_id not in TASK_ID_MODES:
        raise ValueError(f"unknown task_id {task_id!r}; allowed: {', '.join(TASK_ID_MODES)}")
    return task_id


@dataclass(frozen=True)
class ObservationLayout:
    """Padding plus task id; ``low``/``high`` bound the padded task part."""

    task_width: int
    num_tasks: int
    task_id: str
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_spaces(cls, spaces: list[gym.spaces.Box], task_id: str) -> "ObservationLayout":
        """The layout covering every task space: widest width, elementwise widest bounds."""
        width = max(int(np.prod(s.shape)) for s in spaces)
        low = np.zeros(width, dtype=np.float64)
        high = np.zeros(width, dtype=np.float64)
        for space in spaces:
            n = int(np.prod(space.shape))
            low[:n] = np.minimum(low[:n], np.asarray(space.low, dtype=np.float64).reshape(-1))
            high[:n] = np.maximum(high[:n], np.asarray(space.high, dtype=np.float64).reshape(-1))
        # Padding (always 0) and degenerate dims get [-1, 1]: Gymnasium rejects low == high.
        flat = low >= high
        low[flat] = np.minimum(low[flat], -1.0)
        high[flat] = np.maximum(high[flat], 1.0)
        return cls(width, len(spaces), check_task_id(task_id), low, high)

    @property
    def id_width(self) -> int:
        return self.num_tasks if self.task_id == "onehot" else 0

    @property
    def width(self) -> int:
        return self.task_width + self.id_width

    def space(self) -> gym.spaces.Box:
        low = np.concatenate([self.low, np.zeros(self.id_width)]).astype(np.float32)
        high = np.concatenate([self.high, np.ones(self.id_width)]).astype(np.float32)
        return gym.spaces.Box(low=low, high=high, dtype=np.float32)

    def build(self, task_obs: np.ndarray, position: int) -> np.ndarray:
        out = np.zeros(self.width, dtype=np.float32)
        flat = np.asarray(task_obs, dtype=np.float32).reshape(-1)
        out[: flat.shape[0]] = flat
        if self.task_id == "onehot":
            out[self.task_width + position] = 1.0
        return out

    def split(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(padded task part, one-hot part) of a batch ``[..., width]``."""
        return obs[..., : self.task_width], obs[..., self.task_width :]
