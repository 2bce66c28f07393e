"""Keeping NaN and inf out of the agent's weights, replay and saved files.

What the agent does with each kind of non-finite value (the environments' side is in
:mod:`contenv.finite`):

- **A transition** whose env flagged a physics blow-up (``info["nonfinite"]``, Meta-World
  only) is not stored; the episode ends there (the env truncated it) and the event is
  counted (``train/nonfinite_episodes`` in ``progress.csv``). Any other non-finite reward
  or observation (an env that is not a ContinualEnv) raises :class:`NonFiniteError`
  naming the step and the value.
- **A loss or gradient** that is not finite stops the run with :class:`NonFiniteError`
  naming the update, the env step, the task and which loss (or which parameter's
  gradient) was not finite, *before* the optimizer step: no weight, Adam moment or
  target network has changed, and the last checkpoint on disk is the last good state.
  We stop rather than skip: with finite inputs (the replay holds only finite
  transitions) a non-finite loss means divergence (a too large learning rate, a
  protection's coefficient) or a bug, and a counted skip would leave a run that keeps
  diverging and produces a table that looks fine. The check is one device sync per
  update.
- **Observations given to** ``predict``/``act`` must have the agent's width and be finite.
- **Files**: :func:`check_finite_state` refuses to write any state (``SAC.save``,
  checkpoints) that holds a non-finite floating-point tensor, array or number.

Example:
    >>> import torch
    >>> check_finite_state({"actor": {"w": torch.ones(2)}, "log_alpha": torch.zeros(3)}, "agent file")
    >>> check_finite_state({"actor": {"w": torch.tensor([1.0, float("nan")])}}, "agent file")
    Traceback (most recent call last):
    ...
    contenv.finite.NonFiniteError: refusing to write agent file: actor.w holds non-finite values (1 of 2 entries)
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from contenv.finite import NONFINITE_INFO_KEY, NonFiniteError, describe_nonfinite, is_finite_step

__all__ = ["NonFiniteError", "check_transition", "check_update", "check_observations", "check_finite_state",
           "end_replay_episode"]


def check_transition(next_obs: Any, reward: float, info: dict[str, Any], step: int, task: int) -> bool:
    """Whether a step may be stored: False for a flagged blow-up; an error for any other non-finite value."""
    if info.get(NONFINITE_INFO_KEY):
        return False
    if not is_finite_step(next_obs, reward):
        raise NonFiniteError(f"the env returned a non-finite {describe_nonfinite(next_obs, reward)} at step {step} "
                             f"(task {task}); nothing was stored or learned from it")
    return True


def end_replay_episode(replay: Any) -> None:
    """Close the episode being collected in a sequence replay without adding a step
    (what ``add(..., truncated=True)`` does), so the next step starts a new episode."""
    if getattr(replay, "sequence", False) and replay.seen > replay.current_start:
        first = max(replay.current_start, replay.seen - replay.size)
        replay._ring_fill(replay.episode_end, first, replay.seen, replay.seen)
        replay.current_start = replay.seen


def _grads(parameters: Iterable[Tensor]) -> list[Tensor]:
    return [p.grad for p in parameters if p.grad is not None]


def check_update(loss_terms: Tensor, names: list[str], named_parameters: Iterable[tuple[str, Tensor]],
                 where: str) -> None:
    """Raise :class:`NonFiniteError` unless every loss term and every gradient is finite.

    Args:
        loss_terms: the loss and its parts (any shape; e.g. ``[K, terms]`` for stacked seeds).
        names: the name of each term along the last dim of ``loss_terms``.
        named_parameters: ``(name, parameter)`` pairs whose ``.grad`` is checked.
        where: the update, env step and task, for the message.
    """
    named = [(n, p) for n, p in named_parameters if p.grad is not None]
    grads = [p.grad for _, p in named]
    norms = torch._foreach_norm(grads) if grads else []
    values = torch.cat([loss_terms.detach().reshape(-1).float(), *(n.reshape(1).float() for n in norms)])
    if bool(torch.isfinite(values).all()):  # the one sync of the check
        return
    terms = loss_terms.detach().reshape(-1, len(names)).cpu()
    bad_terms = [f"{name}={terms[:, i].tolist() if len(terms) > 1 else terms[0, i].item()}"
                 for i, name in enumerate(names) if not torch.isfinite(terms[:, i]).all()]
    bad_grads = [name for name, p in named if not torch.isfinite(p.grad).all()]
    what = (f"non-finite loss ({', '.join(bad_terms)})" if bad_terms
            else f"non-finite gradient of {', '.join(bad_grads[:6])}{' ...' if len(bad_grads) > 6 else ''}")
    raise NonFiniteError(f"{where}: {what}. The update was not applied (no weight changed); the run stops here and "
                         "its last checkpoint is the last good state. Lower the learning rate or set clip_grad_norm, "
                         "or check the protection's coefficient.")


def check_observations(obs: np.ndarray, obs_dim: int) -> None:
    """``obs`` must be ``[B, obs_dim]`` and finite (``predict``/``act`` input)."""
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"observations must have width {obs_dim} (this agent's env), got shape "
                         f"{obs.shape[1:] if obs.ndim == 2 else obs.shape}")
    if not np.isfinite(obs).all():
        rows = np.flatnonzero(~np.isfinite(obs).all(axis=1)).tolist()
        raise NonFiniteError(f"observations of rows {rows[:8]} hold NaN or inf; the policy needs finite inputs")


def _floats(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield path, obj
    elif isinstance(obj, np.ndarray):
        if np.issubdtype(obj.dtype, np.floating):
            yield path, obj
    elif isinstance(obj, float):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _floats(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _floats(value, f"{path}[{i}]")


def check_finite_state(state: Any, what: str) -> None:
    """Refuse (:class:`NonFiniteError`) a state to be written that holds a non-finite float."""
    for path, value in _floats(state, ""):
        if isinstance(value, Tensor):
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                raise NonFiniteError(f"refusing to write {what}: {path} holds non-finite values "
                                     f"({int((~finite).sum())} of {value.numel()} entries)")
        elif not np.isfinite(value).all():
            raise NonFiniteError(f"refusing to write {what}: {path} holds non-finite values")
