"""What the environments do with non-finite numbers (NaN, inf) and malformed actions.

One NaN reward or observation that reaches an agent turns every weight into NaN within
a few updates, and training then goes on writing NaN metrics. So nothing non-finite
passes silently; what happens depends on where it comes from:

- **Actions** (to every task env and to :class:`~contenv.ContinualEnv`): an action of
  the wrong shape, or with a NaN or inf entry, raises :class:`NonFiniteError` (a
  ``ValueError``) naming the task and what was wrong. It is always a bug in the caller.
- **A physics blow-up inside a Meta-World episode** (MuJoCo returns a NaN/inf state or
  reward): the episode ends there (``truncated=True``, ``info["nonfinite"]=True``), the
  step returns the last finite observation and reward 0, and the run goes on. Simulator
  instabilities are rare, local to one episode and cured by a reset; stopping a
  multi-day run for one of them would cost more than it protects. The agent stores no
  transition for that step and counts the episode (``train/nonfinite_episodes``).
- **Any other task** (memory tasks, POPGym, a user's env): a non-finite reward or
  observation raises :class:`NonFiniteError` naming the task, the step and the value.
  These tasks are deterministic functions of the agent's actions; a NaN is a bug to
  fix, not noise to skip.

Example:
    >>> check_action([0.0, 1.0, -1.0, 0.5], (4,), "reach-v3").tolist()
    [0.0, 1.0, -1.0, 0.5]
    >>> check_action([0.0, 1.0], (4,), "copy(p=3)")
    Traceback (most recent call last):
    ...
    contenv.finite.NonFiniteError: copy(p=3): the action must have shape (4,), got shape (2,)
    >>> check_step_values(np.zeros(3), float("nan"), "copy(p=3)", step=7)
    Traceback (most recent call last):
    ...
    contenv.finite.NonFiniteError: copy(p=3) returned a non-finite reward nan at step 7
"""

from __future__ import annotations

from typing import Any

import numpy as np

NONFINITE_INFO_KEY = "nonfinite"


class NonFiniteError(ValueError):
    """A NaN or inf (or a malformed action) where a finite value is required."""


def check_action(action: Any, shape: tuple[int, ...], task: str) -> np.ndarray:
    """``action`` as a float32 array of ``shape``; a clear error if it has another shape or a NaN/inf."""
    try:
        array = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise NonFiniteError(f"{task}: the action must be an array of shape {tuple(shape)}, got {action!r} ({err})") from None
    if array.shape != tuple(shape):
        raise NonFiniteError(f"{task}: the action must have shape {tuple(shape)}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise NonFiniteError(f"{task}: the action has a non-finite entry: {array.tolist()}")
    return array


def is_finite_step(obs: Any, reward: Any) -> bool:
    """Whether an observation and a reward are all finite."""
    return bool(np.isfinite(reward)) and bool(np.isfinite(np.asarray(obs, dtype=np.float64)).all())


def describe_nonfinite(obs: Any, reward: Any) -> str:
    """``"reward nan"`` or ``"observation [..] (entries [3])"``: what was not finite."""
    if not np.isfinite(reward):
        return f"reward {reward}"
    obs = np.asarray(obs, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(obs))
    return f"observation (entries {bad.tolist()[:8]}: {obs.reshape(-1)[bad[:8]].tolist()})"


def check_step_values(obs: Any, reward: Any, task: str, step: int) -> None:
    """Raise :class:`NonFiniteError` naming ``task``, ``step`` and the value unless all are finite."""
    if not is_finite_step(obs, reward):
        raise NonFiniteError(f"{task} returned a non-finite {describe_nonfinite(obs, reward)} at step {step}")


__all__ = ["NonFiniteError", "NONFINITE_INFO_KEY", "check_action", "check_step_values", "is_finite_step",
           "describe_nonfinite"]
