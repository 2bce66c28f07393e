"""ContinualEnv: one Gymnasium env that walks through a sequence of tasks.

The env owns one env per distinct task and switches to the next position of the
sequence every ``steps_per_task`` environment steps. At the switch the running episode is
truncated (``truncated=True``, ``info["task_switch"]=True``); the next ``reset()`` starts
the new task. Observations use one :class:`~contenv.layout.ObservationLayout` for the
whole sequence (padded to the widest task, plus the position one-hot by default).

Example:
    >>> env = ContinualEnv(["reach-v3", "push-v3"], steps_per_task=3, horizon=10)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, info["task_index"], info["task_name"]
    ((41,), 0, 'reach-v3')
    >>> for _ in range(3):
    ...     obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> truncated, info["task_switch"]
    (True, True)
    >>> obs, info = env.reset()
    >>> info["task_index"], obs[-2:].tolist()
    (1, [0.0, 1.0])
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from contenv.finite import NONFINITE_INFO_KEY, check_action, check_step_values
from contenv.layout import ObservationLayout, check_task_id
from contenv.tasks.registry import canonical_spec, make_task
from contenv.tasks.metaworld import REWARD_VERSIONS

ACTION_SPACE = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)


class BudgetExhaustedError(RuntimeError):
    """Raised when a ContinualEnv is stepped past its whole budget."""


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_sequence_args(tasks: Sequence[str], steps_per_task: int, horizon: int, task_id: str, reward_version: str) -> list[str]:
    """Validate the protocol arguments; return the canonical task specs."""
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or len(tasks) == 0:
        raise ValueError(f"tasks must be a non-empty list of task names, got {tasks!r}")
    check_positive_int("steps_per_task", steps_per_task)
    check_positive_int("horizon", horizon)
    check_task_id(task_id)
    if reward_version not in REWARD_VERSIONS:
        raise ValueError(f"unknown reward_version {reward_version!r}; allowed: {', '.join(REWARD_VERSIONS)}")
    return [canonical_spec(t) for t in tasks]


def position_seeds(seed: int, count: int) -> list[int]:
    """Independent, reproducible seeds for the task envs of one sequence."""
    states = np.random.SeedSequence(seed).spawn(count)
    return [int(s.generate_state(1)[0]) for s in states]


class ContinualEnv(gym.Env):
    """A continual-learning scenario as one ``gym.Env``.

    Args:
        tasks: task specs in sequence order (``"hammer-v3"``, ``"copy(p=3,i=10)"``). A task
            may appear more than once (CW20); every position is its own task (own one-hot).
        steps_per_task: environment steps spent on each position (CW: 1,000,000).
        horizon: episode length of Meta-World tasks (CW: 200). Memory tasks have their own
            length, set by their dials.
        task_id: ``"onehot"`` appends the position one-hot to the observation; ``"hidden"``
            leaves it out.
        reward_version: Meta-World's reward function, ``"v2"`` (default) or ``"v1"``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        tasks: Sequence[str],
        steps_per_task: int = 1_000_000,
        horizon: int = 200,
        task_id: str = "onehot",
        reward_version: str = "v2",
    ) -> None:
        self.task_names = check_sequence_args(tasks, steps_per_task, horizon, task_id, reward_version)
        self.steps_per_task = int(steps_per_task)
        self.horizon = int(horizon)
        self.task_id = task_id
        self.reward_version = reward_version

        # One env per distinct task: repeated positions (CW20) never run at the same time.
        self._envs: dict[str, gym.Env] = {}
        for spec in self.task_names:
            if spec not in self._envs:
                env = make_task(spec, horizon=self.horizon, reward_version=reward_version)
                _check_task_action_space(spec, env.action_space)
                self._envs[spec] = env
        self.layout = ObservationLayout.from_spaces([self._envs[s].observation_space for s in self.task_names], task_id)
        self.observation_space = self.layout.space()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)

        self.global_step = 0
        self._pending_seeds: dict[str, int] = {}
        self._episode_position: int | None = None
        self._needs_reset = True

    # ----------------------------------------------------------------- properties
    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def total_steps(self) -> int:
        return self.num_tasks * self.steps_per_task

    @property
    def task_index(self) -> int:
        """The position being trained now (the last one once the budget is spent)."""
        return min(self.global_step // self.steps_per_task, self.num_tasks - 1)

    @property
    def current_task(self) -> str:
        return self.task_names[self.task_index]

    def task_env(self, position: int) -> gym.Env:
        """The raw single-task env behind one position."""
        return self._envs[self.task_names[position]]

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            distinct = list(self._envs)
            self._pending_seeds = dict(zip(distinct, position_seeds(seed, len(distinct))))
            self.action_space.seed(seed)
        position = self.task_index
        spec = self.task_names[position]
        obs, info = self._envs[spec].reset(seed=self._pending_seeds.pop(spec, None))
        self._episode_position = position
        self._needs_reset = False
        return self.layout.build(obs, position), self._info(position, dict(info), success=False)

    def step(self, action):
        if self.global_step >= self.total_steps:
            raise BudgetExhaustedError(
                f"this ContinualEnv's budget is spent: {self.num_tasks} tasks x {self.steps_per_task} steps = "
                f"{self.total_steps} steps were taken. Make a new env (or a larger steps_per_task) to go on."
            )
        if self._needs_reset:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        position = self._episode_position
        spec = self.task_names[position]
        action = check_action(action, self.action_space.shape, f"task {spec!r} (position {position})")
        obs, reward, terminated, truncated, info = self._envs[spec].step(action)
        if not info.get(NONFINITE_INFO_KEY):  # else a Meta-World blow-up, which ended its episode (contenv.finite)
            check_step_values(obs, reward, f"task {spec!r} (position {position})",
                              self.global_step + 1)
        self.global_step += 1
        info = self._info(position, dict(info), success=bool(info.get("success", False)))
        if self.global_step % self.steps_per_task == 0:
            # The position's budget is spent: cut the episode; bootstrapping stays valid.
            info["task_switch"] = True
            truncated = not terminated
            if self.global_step == self.total_steps:
                info["sequence_done"] = True
        if terminated or truncated:
            self._needs_reset = True
        return self.layout.build(obs, position), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        for env in self._envs.values():
            env.close()

    # ----------------------------------------------------------------- resume support
    def state_dict(self) -> dict[str, Any]:
        """The scenario's position (for checkpoints); task-env internals are not saved."""
        return {"global_step": self.global_step, "task_names": list(self.task_names), "steps_per_task": self.steps_per_task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Jump to a saved position; the next call must be ``reset()``."""
        if list(state["task_names"]) != self.task_names or state["steps_per_task"] != self.steps_per_task:
            raise ValueError(
                "this checkpoint belongs to another scenario: "
                f"tasks {state['task_names']} x {state['steps_per_task']} steps, "
                f"this env has {self.task_names} x {self.steps_per_task} steps"
            )
        self.global_step = int(state["global_step"])
        self._needs_reset = True

    def _info(self, position: int, info: dict[str, Any], success: bool) -> dict[str, Any]:
        info["success"] = success
        info["task_index"] = position
        info["task_name"] = self.task_names[position]
        info.setdefault("task_switch", False)
        return info


def _check_task_action_space(spec: str, space: gym.Space) -> None:
    if not isinstance(space, gym.spaces.Box) or space.shape != ACTION_SPACE.shape:
        raise ValueError(f"task {spec!r} has action space {space}; every task must use Box(-1, 1, (4,))")
