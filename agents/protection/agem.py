"""A-GEM: never let an update increase the loss on an episodic memory of old tasks.

Averaged gradient episodic memory (Chaudhry et al., ICLR 2019) keeps a small memory of
every finished task. Before each optimizer step it computes the reference gradient
``g_ref`` of the loss on a batch of that memory; when the proposed gradient ``g`` opposes
it (``g . g_ref < 0``), ``g`` is projected onto the half-space where it does not:

    g <- g - (g . g_ref / g_ref . g_ref) g_ref      (then g . g_ref = 0)

Continual World's settings (Wolczyk et al. 2021, ``AGEM_SAC``): 10,000 transitions per
finished task sampled from its replay, episodic batches of 128, the full SAC loss on the
memory as reference, and one projection of the joint actor + critic gradient (the
entropy coefficients are left alone). Recurrent agents store sub-sequences of the
replay instead of transitions (``ceil(10,000 / seq_len)`` of them, about as many steps)
and sample 128 of them, as their SAC batch does.

Documented difference: CW's ``EpisodicMemory.sample_batch`` draws the 128 rows *without*
replacement (``np.random.choice(..., replace=False)``); we draw with replacement (the
agent's seeded generator, no ``O(memory)`` permutation per update). With 10,000 rows per
task a batch holds a repeated row with probability about 0.56 with one task stored (0.08
with ten), and a repeat changes the reference gradient by one row's weight in 128: no
effect on results beyond the noise of the batch.

Example:
    >>> g, g_ref = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])
    >>> project(g, g_ref)  # the component against g_ref is removed
    tensor([1., 0.])
    >>> project(torch.tensor([1.0, 1.0]), g_ref)  # no conflict: unchanged
    tensor([1., 1.])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agents.protection.base import Protection
from agents.protection.common import (
    Rows,
    cat_rows,
    is_last_task,
    memory_rows,
    rows_count,
    rows_to_batch,
    sample_rows,
    sample_task_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent


def project(gradient: Tensor, reference: Tensor) -> Tensor:
    """A-GEM's projection of a flat ``gradient`` against a flat ``reference`` gradient.

    Written without a branch (``min(dot, 0)``) so that a GPU never waits for the sign:
    when ``dot >= 0`` the coefficient is exactly 0 and ``gradient`` comes back unchanged.
    """
    dot = torch.dot(gradient, reference)
    return gradient - (dot.clamp(max=0.0) / torch.dot(reference, reference).clamp(min=1e-30)) * reference


class AGEM(Protection):
    """Episodic memory per finished task and gradient projection.

    Args:
        memory_per_task: states kept per finished task (CW: 10,000; recurrent agents keep
            sub-sequences holding about as many steps).
        episodic_batch_size: memory rows per reference gradient (CW: 128).

    State (in ``state_dict``): ``memory`` (batch fields -> tensors over all stored rows),
    ``memory_tasks`` (tasks stored, in order), ``updates`` and ``violations`` (how often
    the proposed gradient opposed the memory's and was projected).
    """

    name = "agem"

    def __init__(self, memory_per_task: int = 10_000, episodic_batch_size: int = 128) -> None:
        if memory_per_task <= 0 or episodic_batch_size <= 0:
            raise ValueError(f"memory_per_task and episodic_batch_size must be positive, "
                             f"got {memory_per_task}, {episodic_batch_size}")
        self.memory_per_task, self.episodic_batch_size = int(memory_per_task), int(episodic_batch_size)
        self.memory: Rows = {}
        self.memory_tasks: list[int] = []
        self.updates = 0
        self.violations: Tensor | int = 0  # a tensor once counting starts: no GPU sync per update

    def on_task_end(self, agent: "Agent", task: int) -> None:
        if is_last_task(agent, task):
            return
        rows = sample_task_rows(agent, task, memory_rows(agent, self.memory_per_task))
        self.memory = cat_rows(self.memory, {name: value.detach().clone() for name, value in rows.items()})
        self.memory_tasks.append(int(task))

    def after_backward(self, agent: "Agent") -> None:
        if rows_count(self.memory) == 0:
            return
        params = [*agent.actor.parameters(), *agent.critic.parameters()]
        batch = rows_to_batch(sample_rows(self.memory, self.episodic_batch_size, agent.generator))
        # The memory's SAC loss only: the reference is "do not forget", not the regularisers.
        reference_loss, _ = agent.compute_loss(batch, include_protection=False)
        reference = torch.autograd.grad(reference_loss, params, allow_unused=True)
        flat_ref = torch.cat([torch.zeros_like(p).flatten() if r is None else r.flatten()
                              for p, r in zip(params, reference)])
        flat = torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten() for p in params])
        self.updates += 1
        self.violations = self.violations + (torch.dot(flat, flat_ref) < 0).long()
        projected = project(flat, flat_ref)
        offset = 0
        for p in params:
            size = p.numel()
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(projected[offset : offset + size].view_as(p))
            offset += size
