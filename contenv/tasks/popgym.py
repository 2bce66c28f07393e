"""POPGym tasks in contenv's unified spaces (optional extra: ``pip install 'contenv[popgym]'``).

Task names are ``popgym/<ClassName>`` with a class of ``popgym.envs`` (POPGym 1.0.x):
``popgym/RepeatFirstEasy``, ``popgym/RepeatPreviousEasy``, ``popgym/AutoencodeEasy``,
``popgym/PositionOnlyCartPoleEasy``, ``popgym/VelocityOnlyCartPoleEasy``, ... Dials are
the named constructor arguments of that class (``popgym/RepeatPrevious(k=2,num_decks=1)``)
plus ``success_threshold``.

How a POPGym env is fitted:

- Observations are flattened into one float32 vector: discrete parts (``Discrete``,
  ``MultiDiscrete``, inside ``Tuple``) become one-hots, ``Box`` parts are flattened.
  Infinite ``Box`` bounds (VelocityOnlyCartPole) are replaced by ``+-UNBOUNDED_LIMIT`` and
  observations clipped to them, so the space is finite and contains every observation.
- Actions come from ``Box(-1, 1, (4,))``: a ``Discrete(n)`` action with ``n <= 4`` is the
  argmax of the first ``n`` components; a ``Box`` action with at most 4 finite dims is
  read from the first components, rescaled from [-1, 1] to its bounds. Anything else
  (``MultiDiscrete``, more than 4 choices) raises a ValueError; ``fitting_task_names()``
  lists what fits.
- POPGym normalises episode returns to [-1, 1]. On the last step of an episode
  ``info["score"] = (R + 1) / 2`` (R clipped to [-1, 1]) and ``info["success"] = R >=
  success_threshold`` (default 0.5: for the 4-suit card tasks, three answers in four
  right, where random guessing gives R = -0.5; for CartPole, balancing through half of
  the episode). Before that step ``success`` is False. Rewards pass through unchanged.
  Caveat: POPGym's CartPole variants under gymnasium >= 0.26 never emit their -1 failure
  reward, so their R lies in [0, 1] and their score in [0.5, 1]; use success there.
- Episodes end when the POPGym env ends them (every POPGym env has a finite length);
  the sequence's ``horizon`` and ``reward_version`` are ignored.

This module imports without POPGym; building a task without it raises an ImportError
with the install hint.

Example:
    >>> import importlib.util
    >>> if importlib.util.find_spec("popgym") is not None:
    ...     env = make_popgym_task("popgym/RepeatFirstEasy", {})
    ...     obs, info = env.reset(seed=0)
    ...     print(env.action_space, obs.shape)
    ... else:  # the optional extra is not installed: same answer, written out
    ...     print("Box(-1.0, 1.0, (4,), float32) (4,)")
    Box(-1.0, 1.0, (4,), float32) (4,)
"""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym
import numpy as np

from contenv.finite import check_action
from contenv.tasks.registry import TaskFamily, register_task_family, unknown_name_error

PREFIX = "popgym/"
INSTALL_HINT = "POPGym tasks need the optional extra: pip install 'contenv[popgym]' (or pip install popgym)"
DEFAULT_SUCCESS_THRESHOLD = 0.5
UNBOUNDED_LIMIT = 10.0
ACTION_DIM = 4
FITS = (
    "contenv's action space Box(-1, 1, (4,)) fits a Discrete action with at most 4 choices (argmax of the "
    "first n components) or a Box action with at most 4 finite dims; see "
    "contenv.tasks.popgym.fitting_task_names() for the POPGym tasks that fit"
)


def popgym_env_classes() -> dict[str, type]:
    """Every POPGym env class by name (``"RepeatFirstEasy"``: class).

    Raises:
        ImportError: POPGym is not installed (the message says how to install it).
    """
    try:
        import popgym.envs as popgym_envs
        from popgym.core.env import POPGymEnv
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return {
        name: obj
        for name, obj in sorted(vars(popgym_envs).items())
        if inspect.isclass(obj) and issubclass(obj, POPGymEnv) and obj is not POPGymEnv
    }


# --------------------------------------------------------------------------- observations
# Flatteners and decoders are small classes rather than closures so that a task (and a
# ContinualEnv holding it) pickles.
class Flattener:
    """Turns one observation of a POPGym space into a float32 vector within ``low..high``."""

    low: np.ndarray
    high: np.ndarray

    def __call__(self, x: Any) -> np.ndarray:
        raise NotImplementedError


class OneHot(Flattener):
    def __init__(self, n: int, start: int = 0) -> None:
        self.n, self.start = n, start
        self.low, self.high = np.zeros(n), np.ones(n)

    def __call__(self, x: Any) -> np.ndarray:
        out = np.zeros(self.n, dtype=np.float32)
        out[int(x) - self.start] = 1.0
        return out


class MultiOneHot(Flattener):
    """MultiDiscrete: one one-hot per component, concatenated."""

    def __init__(self, nvec: np.ndarray, start: np.ndarray) -> None:
        self.nvec, self.start = nvec.reshape(-1).astype(np.int64), start.reshape(-1).astype(np.int64)
        size = int(self.nvec.sum())
        self.low, self.high = np.zeros(size), np.ones(size)
        self.offsets = np.concatenate([[0], np.cumsum(self.nvec)[:-1]])

    def __call__(self, x: Any) -> np.ndarray:
        out = np.zeros(self.low.shape[0], dtype=np.float32)
        out[self.offsets + np.asarray(x).reshape(-1) - self.start] = 1.0
        return out


class Clipped(Flattener):
    """Box and MultiBinary parts: flattened and clipped to finite bounds."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        low = np.where(np.isfinite(low), low, -UNBOUNDED_LIMIT)
        high = np.where(np.isfinite(high), high, UNBOUNDED_LIMIT)
        high = np.where(high > low, high, low + 1.0)  # degenerate dims would upset the checker
        self.low, self.high = low, high
        self._low32, self._high32 = low.astype(np.float32), high.astype(np.float32)

    def __call__(self, x: Any) -> np.ndarray:
        return np.clip(np.asarray(x, dtype=np.float32).reshape(-1), self._low32, self._high32)


class Concatenated(Flattener):
    """Tuple spaces: the parts' vectors one after the other."""

    def __init__(self, parts: list[Flattener]) -> None:
        self.parts = parts
        self.low = np.concatenate([p.low for p in parts])
        self.high = np.concatenate([p.high for p in parts])

    def __call__(self, x: Any) -> np.ndarray:
        return np.concatenate([part(item) for part, item in zip(self.parts, x)]).astype(np.float32)


def make_flattener(space: gym.Space) -> Flattener:
    """A :class:`Flattener` for Discrete, MultiDiscrete, MultiBinary, Box and Tuples of them."""
    if isinstance(space, gym.spaces.Discrete):
        return OneHot(int(space.n), int(space.start))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiOneHot(np.asarray(space.nvec), np.asarray(space.start))
    if isinstance(space, gym.spaces.MultiBinary):
        size = int(np.prod(space.shape))
        return Clipped(np.zeros(size), np.ones(size))
    if isinstance(space, gym.spaces.Box):
        return Clipped(np.asarray(space.low, dtype=np.float64).reshape(-1), np.asarray(space.high, dtype=np.float64).reshape(-1))
    if isinstance(space, gym.spaces.Tuple):
        return Concatenated([make_flattener(s) for s in space.spaces])
    raise ValueError(f"cannot flatten a POPGym observation space {space}: supported are Discrete, MultiDiscrete, MultiBinary, Box and Tuples of them")


# --------------------------------------------------------------------------- actions
class DiscreteDecoder:
    """``Discrete(n)``, ``n <= 4``: the argmax of the first ``n`` components."""

    def __init__(self, n: int, start: int) -> None:
        self.n, self.start = n, start

    def __call__(self, action: np.ndarray) -> int:
        return self.start + int(np.argmax(np.asarray(action, dtype=np.float64).reshape(-1)[: self.n]))


class BoxDecoder:
    """A bounded ``Box`` of at most 4 dims: the first components rescaled from [-1, 1]."""

    def __init__(self, space: gym.spaces.Box) -> None:
        self.size, self.shape, self.dtype = int(np.prod(space.shape)), space.shape, space.dtype
        self.low = np.asarray(space.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(space.high, dtype=np.float64).reshape(-1)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        unit = np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[: self.size], -1.0, 1.0)
        return (self.low + (unit + 1.0) * 0.5 * (self.high - self.low)).reshape(self.shape).astype(self.dtype)


def make_action_decoder(space: gym.Space, task_name: str) -> DiscreteDecoder | BoxDecoder:
    """Maps a ``Box(-1, 1, (4,))`` action to ``space``; a ValueError when it does not fit."""
    if isinstance(space, gym.spaces.Discrete) and space.n <= ACTION_DIM:
        return DiscreteDecoder(int(space.n), int(space.start))
    if isinstance(space, gym.spaces.Box) and int(np.prod(space.shape)) <= ACTION_DIM and space.is_bounded("both"):
        return BoxDecoder(space)
    raise ValueError(f"{task_name} has the action space {space}, which does not fit: {FITS}")


def _fits(space: gym.Space) -> bool:
    try:
        make_action_decoder(space, "")
    except ValueError:
        return False
    return True


def fitting_task_names() -> list[str]:
    """The ``popgym/<name>`` tasks whose actions fit ``Box(-1, 1, (4,))``."""
    return [PREFIX + name for name, cls in popgym_env_classes().items() if _fits(cls().action_space)]


# --------------------------------------------------------------------------- the task env
class POPGymTask(gym.Env[np.ndarray, np.ndarray]):
    """One POPGym env in the unified spaces, with ``success`` and ``score`` in ``info``.

    Args:
        env_name: the POPGym class name (``"RepeatFirstEasy"``), without the prefix.
        success_threshold: the normalised return (in [-1, 1]) an episode must reach to count
            as a success.
        **env_kwargs: named constructor arguments of the POPGym class.
    """

    metadata = {"render_modes": []}

    def __init__(self, env_name: str, success_threshold: float = DEFAULT_SUCCESS_THRESHOLD, **env_kwargs: Any) -> None:
        classes = popgym_env_classes()
        task_name = PREFIX + env_name
        if env_name not in classes:
            raise unknown_name_error("POPGym task", task_name, [PREFIX + n for n in classes])
        if isinstance(success_threshold, bool) or not isinstance(success_threshold, (int, float)) or not -1.0 <= success_threshold <= 1.0:
            raise ValueError(f"dial success_threshold of {task_name} must be a number in [-1, 1], got {success_threshold!r}")
        cls = classes[env_name]
        _check_env_kwargs(task_name, cls, env_kwargs)
        self.task_name = task_name
        self.success_threshold = float(success_threshold)
        self.inner = cls(**env_kwargs)
        self._decode = make_action_decoder(self.inner.action_space, task_name)
        self._flattener = make_flattener(self.inner.observation_space)
        self.observation_space = gym.spaces.Box(
            self._flattener.low.astype(np.float32), self._flattener.high.astype(np.float32), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)
        self._return = 0.0
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, _ = self.inner.reset(seed=seed)
        self._return = 0.0
        self._done = False
        return self._flattener(obs), {"success": False}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError(f"{self.task_name}: the episode has ended (or never started); call reset() first")
        action = check_action(action, self.action_space.shape, self.task_name)
        obs, reward, terminated, truncated, _ = self.inner.step(self._decode(action))
        self._return += float(reward)
        info: dict[str, Any] = {"success": False}
        if terminated or truncated:
            self._done = True
            normalised = float(np.clip(self._return, -1.0, 1.0))  # sums of 1/n steps drift past +-1
            info = {"success": normalised >= self.success_threshold, "score": (normalised + 1.0) / 2.0}
        return self._flattener(obs), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.inner.close()


def _check_env_kwargs(task_name: str, cls: type, env_kwargs: dict[str, Any]) -> None:
    named = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(env_kwargs) - set(named))
    if unknown:
        allowed = ", ".join(named + ["success_threshold"])
        raise ValueError(f"task {task_name!r} has no dial(s) {', '.join(unknown)}; allowed dials: {allowed}")


def make_popgym_task(
    task_name: str,
    params: dict[str, Any] | None = None,
    *,
    horizon: int | None = None,
    reward_version: str | None = None,
) -> POPGymTask:
    """The registry's factory for ``popgym/<name>`` (``horizon``, ``reward_version`` ignored).

    Raises:
        ImportError: POPGym is not installed.
        ValueError: unknown name (close matches listed), unknown dial, or an action space
            that does not fit ``Box(-1, 1, (4,))``.
    """
    if not task_name.startswith(PREFIX):
        raise ValueError(f"POPGym task names start with {PREFIX!r}, got {task_name!r}")
    return POPGymTask(task_name[len(PREFIX) :], **dict(params or {}))


register_task_family(TaskFamily("popgym", names=(), factory=make_popgym_task, prefix=PREFIX))
