"""Meta-World v3 tasks with Continual World semantics.

Continual World (Wolczyk et al., 2021) ran Meta-World v1 with four choices this module
reproduces on v3:

- a fresh object/goal layout on every reset: Meta-World v3 freezes the layout of an env
  to one of 50 pre-sampled "tasks"; CW drew a new one per episode, so we unfreeze the
  random vector and draw it from the env's own seeded generator (deterministic under
  ``reset(seed=...)``);
- a 200-step horizon (``horizon`` kwarg), truncating, never terminating;
- success latched for the episode: ``info["success"]`` is true from the first successful
  step on (CW counts an episode as solved if it succeeded at any step);
- an observation space that contains every observation: v3 declares goal bounds that
  some of its own observations leave, so the goal part is widened to cover the hand's
  workspace and the declared goal space.

Memory variants: the dial ``visible_steps=k`` (``"push-v3(visible_steps=5)"``) shows the
goal only in the first ``k`` observations of an episode and zeroes it afterwards;
``hide="goal+object"`` zeroes the object positions too (both frames). A policy must then
remember what it saw: ``contenv/CWMemory10-v0`` is CW10 built this way.

``reward_version`` picks Meta-World's ``reward_function_version``: "v2" (default) or
"v1" (the reward of the original papers). v3's v1 reward of stick-pull reads the object
position at indices of the old observation layout; on the 39-dim layout those indices
overlap the stick, so the reward is wrong. We refuse that combination with a clear error
rather than train on a wrong reward.

Example:
    >>> env = MetaWorldTask("reach-v3", horizon=5)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space.shape
    ((39,), (4,))
    >>> for _ in range(5):
    ...     obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> terminated, truncated
    (False, True)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

from contenv.finite import NONFINITE_INFO_KEY, check_action, describe_nonfinite, is_finite_step
from contenv.tasks.registry import TaskFamily, check_dials, register_task_family, unknown_name_error

REWARD_VERSIONS = ("v2", "v1")
OBS_DIM = 39
GOAL = slice(36, 39)
# Positions of the two objects, in the current and the previous frame.
OBJECT_POSITIONS = (slice(4, 7), slice(11, 14), slice(22, 25), slice(29, 32))
HIDE_CHOICES = ("goal", "goal+object")
# Margin around the union of hand workspace and declared goal space (metres).
_GOAL_MARGIN = 0.1
# v3 leaves object positions unbounded; Gymnasium's checker rejects infinite bounds. 5 m
# is far outside the arena (quaternion parts lie in [-1, 1]); observations are clipped to it.
_OBJECT_BOUND = 5.0


@lru_cache(maxsize=1)
def metaworld_task_names() -> tuple[str, ...]:
    """Every Meta-World v3 task name (``"hammer-v3"``, ...)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


def check_reward_version(task_name: str, reward_version: str) -> None:
    if reward_version not in REWARD_VERSIONS:
        raise ValueError(f"unknown reward_version {reward_version!r}; allowed: {', '.join(REWARD_VERSIONS)}")
    if reward_version == "v1" and task_name == "stick-pull-v3":
        raise ValueError(
            "reward_version='v1' is not supported for stick-pull-v3: Meta-World v3's v1 stick-pull reward "
            "reads the object position at v1-layout indices, which on the 39-dim layout overlap the stick. "
            "Use reward_version='v2' (the default) for sequences containing stick-pull-v3."
        )


class MetaWorldTask(gym.Env):
    """One Meta-World v3 task: fresh layout per reset, fixed horizon, latched success.

    Args:
        task_name: a Meta-World v3 name such as ``"hammer-v3"``.
        horizon: episode length; the episode is truncated at this step.
        reward_version: ``"v2"`` (default) or ``"v1"``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task_name: str,
        horizon: int = 200,
        reward_version: str = "v2",
        visible_steps: int | None = None,
        hide: str = "goal",
    ) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if task_name not in ALL_V3_ENVIRONMENTS:
            raise unknown_name_error("Meta-World task", task_name, ALL_V3_ENVIRONMENTS)
        if not isinstance(horizon, (int, np.integer)) or horizon <= 0:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        check_reward_version(task_name, reward_version)
        if visible_steps is not None and (isinstance(visible_steps, bool) or not isinstance(visible_steps, (int, np.integer)) or visible_steps < 0):
            raise ValueError(f"visible_steps must be an integer >= 0 (or None: always visible), got {visible_steps!r}")
        if hide not in HIDE_CHOICES:
            raise ValueError(f"unknown hide {hide!r}; allowed: {', '.join(HIDE_CHOICES)}")
        self.visible_steps = visible_steps
        self._hidden = [GOAL] + (list(OBJECT_POSITIONS) if hide == "goal+object" else [])
        self._episode_step = 0
        self.task_name = task_name
        self.horizon = int(horizon)
        self.reward_version = reward_version

        env = ALL_V3_ENVIRONMENTS[task_name](reward_function_version=reward_version)
        # What MT1.set_task does, minus the frozen layout: goal visible, task set,
        # layouts drawn from the env's seeded generator on every reset.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # recompute the cached space
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.max_path_length = self.horizon
        self._env = env

        self.observation_space = _widened_observation_space(env)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        self._success = False
        self._seeded = False

    @property
    def raw_env(self) -> Any:
        """The underlying Meta-World env (for scripted policies and debugging)."""
        return self._env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            # Meta-World ignores reset(seed=...); its layouts come from env.np_random.
            self._env.seed(int(self.np_random.integers(2**31 - 1)))
            self._seeded = True
        obs, _ = self._env.reset()
        self._success = False
        self._episode_step = 0
        self._last_obs = self._observe(obs)
        return self._last_obs.copy(), {"success": False}

    def step(self, action):
        action = np.clip(check_action(action, self.action_space.shape, self.task_name), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._episode_step += 1
        if not is_finite_step(obs, reward):
            # A physics blow-up: end the episode here with the last finite observation (see contenv.finite).
            what = describe_nonfinite(obs, reward)
            return self._last_obs.copy(), 0.0, False, True, {
                "success": self._success, "success_now": False, NONFINITE_INFO_KEY: what}
        success_now = bool(info.get("success", False))
        self._success = self._success or success_now
        info = dict(info)
        info["success_now"] = success_now
        info["success"] = self._success
        self._last_obs = self._observe(obs)
        return self._last_obs.copy(), float(reward), bool(terminated), bool(truncated), info

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        # Clipping is a no-op except for a simulator blow-up flinging an object beyond _OBJECT_BOUND.
        obs = np.clip(obs, self.observation_space.low, self.observation_space.high).astype(np.float32)
        if self.visible_steps is not None and self._episode_step >= self.visible_steps:
            for part in self._hidden:
                obs[part] = 0.0
        return obs

    def close(self) -> None:
        self._env.close()

    # Pickling the MuJoCo env copies ~44 MB of simulator state per task. Rebuild it from
    # the constructor arguments instead, keeping both random streams: the layout sequence
    # continues where it was. The episode in flight is not kept: call reset() first.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "args": (self.task_name, self.horizon, self.reward_version, self.visible_steps,
                     "goal+object" if len(self._hidden) > 1 else "goal"),
            "np_random": self._np_random,
            "layout_rng": self._env.np_random if self._seeded else None,
            "seeded": self._seeded,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["args"])
        self._np_random = state["np_random"]
        if state["seeded"]:
            self._env.np_random = state["layout_rng"]
            self._seeded = True


def _widened_observation_space(env: Any) -> gym.spaces.Box:
    space = env.sawyer_observation_space
    low = np.maximum(np.array(space.low, dtype=np.float64), -_OBJECT_BOUND)
    high = np.minimum(np.array(space.high, dtype=np.float64), _OBJECT_BOUND)
    hand = env._HAND_SPACE
    low[GOAL] = np.minimum(np.minimum(low[GOAL], hand.low), env.goal_space.low) - _GOAL_MARGIN
    high[GOAL] = np.maximum(np.maximum(high[GOAL], hand.high), env.goal_space.high) + _GOAL_MARGIN
    # Memory variants zero hidden parts: 0 must lie inside every bound.
    low, high = np.minimum(low, -1e-3), np.maximum(high, 1e-3)
    return gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)


def _make_metaworld_task(name: str, params: dict[str, Any], *, horizon: int, reward_version: str) -> gym.Env:
    dials = check_dials(name, params, {"visible_steps": None, "hide": "goal"})
    return MetaWorldTask(name, horizon=horizon, reward_version=reward_version, **dials)


register_task_family(TaskFamily("metaworld", names=metaworld_task_names(), factory=_make_metaworld_task))
