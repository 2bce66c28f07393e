"""Pieces shared by the weight-importance and memory methods of this package.

- which actor weights a regulariser protects (:func:`shared_actor_names`: Continual
  World's "common variables", i.e. everything but the per-task output heads);
- rows of a finished task from the agent's replay (:func:`sample_task_rows`), kept as a
  plain dict of tensors (a "row memory") so that ``state_dict`` and checkpoints carry it;
- the actor run on stored rows (:func:`actor_inputs`, :func:`run_actor`);
- per-row Jacobians of the actor with ``torch.func`` (:func:`summed_row_jacobians`), from
  which EWC's Fisher and MAS's importance are built;
- which mean the importance and cloning methods differentiate (:func:`policy_mean`):
  Continual World's actor returns the squashed mean ``tanh(mu)`` (``MlpActor.call`` in
  ``continualworld/sac/models.py``), and its EWC, MAS and the episodic/ClonEx code's KL
  take that tensor; ``"pre_tanh_mean"`` is the reparametrisation-invariant alternative
  (the Gaussian before the squashing, whose KL equals that of the squashed policies).

A *row* is one replayed state for the MLP agent (``T = 1``) and one sub-sequence for a
recurrent agent (``T`` steps with a loss mask), exactly as in :class:`agents.replay.Batch`.

Example:
    >>> import numpy as np
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(hidden_sizes=(8,)), spec=SpaceSpec(5, 3, 2, 2, True))
    >>> shared_actor_names(agent)  # two tasks, two heads: the heads are not shared
    ['body.layers.0.weight', 'body.layers.0.bias', 'body.norm.weight', 'body.norm.bias']
    >>> for t in range(6):
    ...     agent.replay.add(np.full(5, t), np.zeros(2), 0.0, np.full(5, t + 1), False, False, task=0)
    >>> rows = sample_task_rows(agent, task=0, count=4)
    >>> rows["obs"].shape, rows_count(sample_rows(rows, 7, agent.generator))
    (torch.Size([4, 2, 5]), 7)
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from agents.replay import Batch, pad_rows

if TYPE_CHECKING:  # pragma: no cover
    from agents.nets.networks import Actor
    from agents.protection.base import Agent

Rows = dict[str, Tensor]
HEAD_PREFIXES = ("mean.", "log_std.")
QUANTITIES = ("tanh_mean", "pre_tanh_mean")  # CW's (default), the invariant one


def check_quantity(quantity: str) -> str:
    """``quantity`` if it is one of :data:`QUANTITIES`, else a clear error."""
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; allowed: {', '.join(QUANTITIES)} "
                         "(tanh_mean: Continual World's squashed mean; pre_tanh_mean: the Gaussian's own mean)")
    return quantity


def policy_mean(mean: Tensor, quantity: str) -> Tensor:
    """The mean a method differentiates: ``tanh(mu)`` (CW) or the pre-tanh ``mu``.

    On a saturated action dimension ``d tanh(mu) = (1 - tanh^2 mu) d mu`` is small, so the
    two forms weigh the same weights differently (by ``(1 - tanh^2 mu)^2`` in a Fisher).

    Example:
        >>> policy_mean(torch.tensor([0.0, 3.0]), "tanh_mean").tolist()[1] < 1.0
        True
        >>> policy_mean(torch.tensor([0.0, 3.0]), "pre_tanh_mean").tolist()
        [0.0, 3.0]
    """
    return torch.tanh(mean) if quantity == "tanh_mean" else mean


def shared_actor_names(agent: "Agent") -> list[str]:
    """The actor weights a regulariser protects: CW's ``common_variables``.

    With one head per task the heads are left out (a task's head only ever gets its own
    task's gradient, and anchoring a new task's untrained head would stop it learning);
    with a single head everything is shared.
    """
    return [name for name, _ in agent.actor.named_parameters()
            if agent.num_heads == 1 or not name.startswith(HEAD_PREFIXES)]


def is_last_task(agent: "Agent", task: int) -> bool:
    """True for the sequence's last task: nothing comes after it to protect it from."""
    return task >= agent.num_tasks - 1


def memory_rows(agent: "Agent", steps: int) -> int:
    """Rows that hold about ``steps`` states: states for the MLP, sub-sequences of
    ``seq_len`` loss steps for recurrent agents."""
    return steps if not agent.recurrent else max(1, math.ceil(steps / agent.config.seq_len))


# ---------------------------------------------------------------------- row memories
def batch_to_rows(batch: Batch) -> Rows:
    """A :class:`Batch` as a dict of its tensors (fields that are None left out)."""
    return {f.name: getattr(batch, f.name) for f in fields(batch) if getattr(batch, f.name) is not None}


def rows_to_batch(rows: Rows) -> Batch:
    """The :class:`Batch` of the batch fields of ``rows`` (other entries ignored)."""
    return Batch(**{f.name: rows[f.name] for f in fields(Batch) if f.name in rows})


def rows_count(rows: Rows) -> int:
    return 0 if not rows else int(next(iter(rows.values())).shape[0])


def take_rows(rows: Rows, index: Tensor) -> Rows:
    return {name: value[index] for name, value in rows.items()}


def cat_rows(first: Rows, second: Rows) -> Rows:
    """Rows of ``first`` then ``second`` (an empty ``first`` is fine).

    Recurrent rows of different lengths (windows and prefixes) are padded to the longer
    one first (:func:`agents.replay.pad_rows`; padding is masked out)."""
    if not first:
        return dict(second)
    if "prev_action" in first:  # sequence rows: windows and prefixes may differ in length
        steps = max(first["mask"].shape[1], second["mask"].shape[1])
        prefix = max(rows["prefix_mask"].shape[1] if "prefix_mask" in rows else 0 for rows in (first, second))
        first, second = pad_rows(first, steps, prefix), pad_rows(second, steps, prefix)
    return {name: torch.cat([first[name], second[name]]) for name in first}


def sample_rows(rows: Rows, count: int, generator: torch.Generator) -> Rows:
    """``count`` rows drawn uniformly with replacement (the agent's generator, so that a
    checkpoint of the agent resumes the same draws)."""
    first = next(iter(rows.values()))
    index = torch.randint(first.shape[0], (count,), generator=generator, device=generator.device)
    return take_rows(rows, index.to(first.device))


def sample_task_rows(agent: "Agent", task: int, count: int, max_draws: int = 100) -> Rows:
    """``count`` replay rows of ``task`` (uniform, with replacement, like CW's ``sample_batch``).

    Under CW's protocol the replay holds only the finished task, and one draw suffices;
    when it keeps older tasks too (perfect-memory replay), rows of other tasks are
    rejected and more are drawn.

    Raises:
        RuntimeError: the replay holds no step of ``task``.
    """
    found: Rows = {}
    for _ in range(max_draws):
        rows = batch_to_rows(agent.replay.sample(count, agent.device))
        keep = rows["task"][:, 0] == task
        found = cat_rows(found, rows if bool(keep.all()) else take_rows(rows, keep.nonzero().squeeze(1)))
        if rows_count(found) >= count:
            return take_rows(found, torch.arange(count, device=agent.device))
    raise RuntimeError(f"the agent's replay holds (almost) no step of task {task}: cannot sample its states")


# ---------------------------------------------------------------------- the actor on rows
def actor_inputs(agent: "Agent", rows: Rows) -> Rows:
    """What the actor reads for the ``T`` steps of each row, plus the loss mask and task.

    Recurrent rows keep their stored previous actions and rewards: the history the
    policy conditions on is the one that was lived.
    """
    steps = rows["action"].shape[1]
    inputs = {"obs": agent.net_obs(rows["obs"][:, :steps]).contiguous(), "task": rows["task"], "mask": rows["mask"]}
    for name in ("prev_action", "prev_reward"):
        if name in rows:
            inputs[name] = rows[name][:, :steps].contiguous()
    if "prefix_obs" in rows and rows["prefix_obs"].shape[1] > 0:  # windows that start inside their episode
        inputs["prefix_obs"] = agent.net_obs(rows["prefix_obs"]).contiguous()
        for name in ("prefix_prev_action", "prefix_prev_reward", "prefix_mask"):
            inputs[name] = rows[name]
    return inputs


def run_actor(actor: "Actor", inputs: Rows, params: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The actor's Gaussian ``(mean, log_std)``, each ``[B, T, action_dim]``.

    A row's recurrent state starts where the agent's update starts it: after the row's
    prefix (unrolled without gradient), or at zero when the window starts its episode.
    """
    state = None
    if "prefix_obs" in inputs:
        state = actor.initial_state(inputs["prefix_obs"], inputs["prefix_prev_action"], inputs["prefix_prev_reward"],
                                    inputs["prefix_mask"], params=params)
    mean, log_std, _ = actor(inputs["obs"], inputs.get("prev_action"), inputs.get("prev_reward"), inputs["task"],
                             state=state, params=params)
    return mean, log_std


def summed_row_jacobians(
    actor: "Actor",
    names: list[str],
    inputs: Rows,
    outputs: Callable[[dict[str, Tensor], Rows], Tensor],
    reduce: Callable[[dict[str, Tensor], Rows], dict[str, Tensor]],
    chunk_size: int = 64,
) -> dict[str, Tensor]:
    """``sum over rows of reduce(J_row, row)``, with ``J_row`` the Jacobian of one row's outputs.

    ``outputs(params, row)`` returns a vector ``[K]`` for one row (given with a batch axis
    of 1); ``torch.func.vmap(jacrev(...))`` gives every row its own Jacobian
    ``{name: [rows, K, *shape]}`` (per-example gradients, not their batch sum), and
    ``reduce`` turns a chunk of them into ``{name: [*shape]}`` summed over the chunk's
    rows. Chunks bound the memory to ``chunk_size x K x parameters``.
    """
    wanted = set(names)
    params = {name: p.detach() for name, p in actor.named_parameters() if name in wanted}

    def row_outputs(p: dict[str, Tensor], row: Rows) -> Tensor:
        return outputs(p, {key: value.unsqueeze(0) for key, value in row.items()})

    jacobian = torch.func.vmap(torch.func.jacrev(row_outputs), in_dims=(None, 0))
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for start in range(0, rows_count(inputs), chunk_size):
        chunk = {key: value[start : start + chunk_size] for key, value in inputs.items()}
        for name, value in reduce(jacobian(params, chunk), chunk).items():
            total[name] += value
    return total


__all__ = [
    "HEAD_PREFIXES", "QUANTITIES", "Rows", "actor_inputs", "batch_to_rows", "cat_rows", "check_quantity",
    "is_last_task", "memory_rows", "policy_mean", "rows_count", "rows_to_batch", "run_actor", "sample_rows",
    "sample_task_rows", "shared_actor_names", "summed_row_jacobians", "take_rows",
]
