"""MAS: memory-aware synapses, importance from how sensitive the actor's output is.

Aljundi et al. (ECCV 2018) weigh each parameter by ``mean over inputs of
|d ||F(x)||^2 / d theta|``, the sensitivity of the squared norm of the network's output;
no labels or rewards are needed. As in Continual World (Wolczyk et al. 2021,
``continualworld/methods/mas.py``, ``MAS_SAC``) the output is what CW's actor returns,
``[tanh(mu), log_std]`` (the squashed mean; ``log_std`` clipped to [-20, 2]), so per state
``|d (||tanh(mu)||^2 + ||log_std||^2) / d theta|``; the mean runs over 10 x 256 states of
the finished task's replay, importances are summed over tasks and the coefficient is 1e4.
``quantity="pre_tanh_mean"`` uses the pre-tanh ``mu`` instead (not CW's; on saturated
dimensions ``mu`` can be large while ``tanh(mu)`` is not, so it weighs weights differently).
CW's critic terms (``regularize_critic``, off in its runs) are not implemented.

For recurrent agents a row is a sub-sequence: its output norm is summed over the loss
steps, and the absolute gradient divided by their number (a per-step scale, so the
coefficient means the same as for the MLP).

Example:
    >>> import numpy as np
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(hidden_sizes=(8,)), spec=SpaceSpec(3, 3, 2, 2, False))
    >>> for t in range(20):
    ...     agent.replay.add(np.random.rand(3), np.zeros(2), 0.0, np.random.rand(3), False, False, task=0)
    >>> mas = MAS(batches=2, batch_size=16)
    >>> mas.on_task_end(agent, 0)
    >>> sorted(mas.importance) == sorted(name for name, _ in agent.actor.named_parameters())
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from agents.protection.common import (
    Rows,
    actor_inputs,
    check_quantity,
    policy_mean,
    run_actor,
    sample_task_rows,
    shared_actor_names,
    summed_row_jacobians,
)
from agents.protection.regulariser import WeightRegulariser

if TYPE_CHECKING:  # pragma: no cover
    from agents.nets.networks import Actor
    from agents.protection.base import Agent


def output_sensitivity(actor: "Actor", names: list[str], inputs: Rows, chunk_size: int = 64,
                       quantity: str = "tanh_mean") -> dict[str, Tensor]:
    """``mean over rows of |d (sum_t mask_t ||[m_t, log_std_t]||^2) / d theta| / steps``,
    with ``m = tanh(mu)`` (CW, ``quantity="tanh_mean"``) or ``m = mu`` (``"pre_tanh_mean"``)."""
    check_quantity(quantity)

    def outputs(params: dict[str, Tensor], row: Rows) -> Tensor:
        mean, log_std = run_actor(actor, row, params)
        norm = policy_mean(mean, quantity).square().sum(-1) + log_std.square().sum(-1)
        return (norm * row["mask"]).sum().view(1)

    def reduce(jacobians: dict[str, Tensor], chunk: Rows) -> dict[str, Tensor]:
        steps = chunk["mask"].sum(1).clamp(min=1.0)
        out = {}
        for name, jac in jacobians.items():
            grad = jac[:, 0].abs()
            out[name] = (grad / steps.view(-1, *([1] * (grad.dim() - 1)))).sum(0)
        return out

    total = summed_row_jacobians(actor, names, inputs, outputs, reduce, chunk_size)
    rows = inputs["mask"].shape[0]
    return {name: value / rows for name, value in total.items()}


class MAS(WeightRegulariser):
    """MAS importance on the actor's shared weights, summed over tasks.

    Args:
        coefficient: CW20 table: 1e4.
        batches, batch_size: rows of the finished task's replay (CW: 10 x 256).
        chunk_size: rows per ``vmap`` call.
        quantity: ``"tanh_mean"`` (CW) or ``"pre_tanh_mean"``.
    """

    name = "mas"

    def __init__(self, coefficient: float = 1e4, batches: int = 10, batch_size: int = 256,
                 chunk_size: int = 64, quantity: str = "tanh_mean") -> None:
        super().__init__(coefficient)
        self.quantity = check_quantity(quantity)
        if batches <= 0 or batch_size <= 0 or chunk_size <= 0:
            raise ValueError(f"batches, batch_size and chunk_size must be positive, "
                             f"got {batches}, {batch_size}, {chunk_size}")
        self.batches, self.batch_size, self.chunk_size = int(batches), int(batch_size), int(chunk_size)

    def task_importance(self, agent: "Agent", task: int) -> dict[str, Tensor]:
        inputs = actor_inputs(agent, sample_task_rows(agent, task, self.batches * self.batch_size))
        return output_sensitivity(agent.actor, shared_actor_names(agent), inputs, self.chunk_size, self.quantity)

