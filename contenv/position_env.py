"""The single-task test env of one sequence position.

Continual World evaluates every position of a sequence on its own test env. That env
must show the agent exactly the observation layout it was trained on: the same padding
and the one-hot of *that* position. :func:`make_test_env` builds it from a ContinualEnv,
a registered id, or a light :class:`PositionSpec` (cheap to pickle into worker processes).

Example:
    >>> import contenv
    >>> env = contenv.make_test_env("contenv/CW10-v0", position=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, int(obs[39 + 3]), info["task_name"]
    ((49,), 1, 'push-back-v3')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from contenv.continual import ContinualEnv
from contenv.finite import NONFINITE_INFO_KEY, check_step_values
from contenv.layout import ObservationLayout
from contenv.tasks.registry import make_task


@dataclass(frozen=True)
class PositionSpec:
    """Everything needed to build one position's test env, without building the others."""

    task_name: str
    position: int
    layout: ObservationLayout
    horizon: int = 200
    reward_version: str = "v2"

    def __call__(self) -> "PositionEnv":
        return PositionEnv(self)


class PositionEnv(gym.Env):
    """One task, observed through a sequence's layout at a fixed position."""

    metadata = {"render_modes": []}

    def __init__(self, spec: PositionSpec) -> None:
        self.spec_of_position = spec
        self._env = make_task(spec.task_name, horizon=spec.horizon, reward_version=spec.reward_version)
        self.observation_space = spec.layout.space()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=self._env.action_space.dtype)
        self._steps = 0

    @property
    def task_env(self) -> gym.Env:
        return self._env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=seed)
        self._steps = 0
        return self._observe(obs), self._info(dict(info))

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(action)
        if not info.get(NONFINITE_INFO_KEY):  # else a Meta-World blow-up, which ended its episode (contenv.finite)
            check_step_values(obs, reward, f"test env of task {self.spec_of_position.task_name!r}", self._steps + 1)
        self._steps += 1
        return self._observe(obs), float(reward), bool(terminated), bool(truncated), self._info(dict(info))

    def close(self) -> None:
        self._env.close()

    def _observe(self, obs):
        return self.spec_of_position.layout.build(obs, self.spec_of_position.position)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        info["success"] = bool(info.get("success", False))
        info["task_index"] = self.spec_of_position.position
        info["task_name"] = self.spec_of_position.task_name
        return info


def position_specs(env_or_id: gym.Env | str, **kwargs: Any) -> list[PositionSpec]:
    """One :class:`PositionSpec` per position of a sequence."""
    env = _continual_env(env_or_id, **kwargs)
    return [
        PositionSpec(name, position, env.layout, env.horizon, env.reward_version)
        for position, name in enumerate(env.task_names)
    ]


def make_test_env(env_or_id: gym.Env | str, position: int, **kwargs: Any) -> PositionEnv:
    """The single-task test env of ``position``, with the training observation layout.

    Args:
        env_or_id: a ContinualEnv (possibly wrapped) or a registered ``contenv/...`` id.
        position: the sequence position (0-based).
        **kwargs: scenario kwargs when ``env_or_id`` is an id (e.g. ``task_id="hidden"``).
    """
    specs = position_specs(env_or_id, **kwargs)
    if not 0 <= position < len(specs):
        raise IndexError(f"position {position} is outside the sequence of {len(specs)} tasks (0..{len(specs) - 1})")
    return specs[position]()


def _continual_env(env_or_id: gym.Env | str, **kwargs: Any) -> ContinualEnv:
    if isinstance(env_or_id, str):
        env = gym.make(env_or_id, **kwargs).unwrapped
    else:
        if kwargs:
            raise TypeError("scenario kwargs are only accepted together with an env id")
        env = env_or_id.unwrapped
    if not isinstance(env, ContinualEnv):
        raise TypeError(f"expected a contenv ContinualEnv or its id, got {type(env).__name__}")
    return env
