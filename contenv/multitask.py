"""A scenario's tasks all at once: the multi-task baseline's training env.

Continual World's multi-task reference (``run_mt.py``, ``continualworld/envs.py``
``MultiTaskEnv`` with ``cycle_mode="episode"``) trains one agent on every task of the
sequence together, for the sequence's total budget: episodes cycle through the tasks in
order (one episode of each in turn), every observation carries its task's one-hot
(which picks the head), and the run ends after ``num_tasks x steps_per_task`` steps.

:class:`MultiTaskEnv` is a :class:`~contenv.continual.ContinualEnv` whose episodes cycle
through the positions instead of following the sequence. ``info["task_index"]`` is the
episode's position; there is no task switch until the budget is spent (the last step
reports ``task_switch`` and ``sequence_done``, so that a run's end is handled as usual).
The observation layout and the test envs (``position_specs``) are the scenario's, so a
multi-task run is evaluated exactly like a continual one.

Deliberate difference: CW's env advances the task index before the first reset, so its
first episode is of task 1; here the first is of task 0.

Example:
    >>> import gymnasium as gym
    >>> import contenv
    >>> seq = gym.make("contenv/Sequence-v0", tasks=["repeat-first(d=2)", "copy(p=1,i=1)"], steps_per_task=20).unwrapped
    >>> env = MultiTaskEnv.from_sequence(seq)
    >>> tasks = []
    >>> for _ in range(4):
    ...     _, info = env.reset(seed=0 if not tasks else None)
    ...     tasks.append(info["task_index"])
    ...     done = False
    ...     while not done:
    ...         _, _, terminated, truncated, info = env.step(env.action_space.sample())
    ...         done = terminated or truncated
    >>> tasks, info["task_switch"]
    ([0, 1, 0, 1], False)
"""

from __future__ import annotations

from typing import Any

from contenv.continual import BudgetExhaustedError, ContinualEnv


class MultiTaskEnv(ContinualEnv):
    """All positions of a scenario at once, one episode of each in turn (CW's ``MultiTaskEnv``).

    Build it like a :class:`ContinualEnv` (same arguments) or from one with
    :meth:`from_sequence` (which shares its task envs).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.episodes = 0

    @classmethod
    def from_sequence(cls, env: ContinualEnv) -> "MultiTaskEnv":
        """The multi-task env of a continual scenario (its task envs and layout shared)."""
        if not isinstance(env, ContinualEnv) or isinstance(env, MultiTaskEnv):
            raise TypeError(f"from_sequence needs a ContinualEnv (not a MultiTaskEnv), got {type(env).__name__}")
        if env.global_step != 0:
            raise ValueError("from_sequence needs a fresh scenario (no step taken yet)")
        multi = cls.__new__(cls)
        multi.__dict__.update(env.__dict__)
        multi.episodes = 0
        return multi

    @property
    def task_index(self) -> int:
        """The position of the next episode to start (episodes cycle through the positions)."""
        return self.episodes % self.num_tasks

    @property
    def current_task(self) -> str:
        position = self._episode_position if self._episode_position is not None else self.task_index
        return self.task_names[position]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)  # the episode of position task_index
        self.episodes += 1
        return obs, info

    def step(self, action):
        if self.global_step >= self.total_steps:
            raise BudgetExhaustedError(
                f"this MultiTaskEnv's budget is spent: {self.total_steps} steps "
                f"({self.num_tasks} tasks x {self.steps_per_task}) were taken."
            )
        if self._needs_reset:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        position = self._episode_position
        obs, reward, terminated, truncated, info = self._envs[self.task_names[position]].step(action)
        self.global_step += 1
        info = self._info(position, dict(info), success=bool(info.get("success", False)))
        if self.global_step == self.total_steps:  # the run's end: cut the episode
            info["task_switch"] = info["sequence_done"] = True
            truncated = not terminated
        if terminated or truncated:
            self._needs_reset = True
        return self.layout.build(obs, position), float(reward), bool(terminated), bool(truncated), info

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "episodes": self.episodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.episodes = int(state["episodes"])
