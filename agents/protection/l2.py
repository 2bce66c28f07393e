"""L2: keep the actor's shared weights near where each finished task left them.

Every weight has importance 1 per finished task, so the penalty is
``coefficient * k * ||theta - theta*||^2`` after ``k`` consolidations, with ``theta*``
the weights at the end of the latest task. The growth with ``k`` is Continual World's
(Wolczyk et al. 2021, ``L2_SAC`` merges a tensor of ones per task); the coefficient 1e5 is
the one of its CW20 table. Heads are left out when there is one per task (see
:func:`agents.protection.common.shared_actor_names`).

Example:
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(hidden_sizes=(4,)), spec=SpaceSpec(3, 3, 3, 2, False))
    >>> l2 = L2()
    >>> l2.on_task_end(agent, 0)
    >>> l2.loss(agent, None).item()
    0.0
    >>> with torch.no_grad():
    ...     _ = agent.actor.body.layers[0].bias.add_(0.01)  # 4 entries move by 0.01
    >>> round(l2.loss(agent, None).item(), 6)  # 1e5 * 4 * 1e-4
    40.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agents.protection.common import shared_actor_names
from agents.protection.regulariser import WeightRegulariser

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent


class L2(WeightRegulariser):
    """Uniform importance: ``coefficient * sum over finished tasks of ||theta - theta*||^2``.

    Args:
        coefficient: CW20 table: 1e5.
    """

    name = "l2"

    def __init__(self, coefficient: float = 1e5) -> None:
        super().__init__(coefficient)

    def task_importance(self, agent: "Agent", task: int) -> dict[str, Tensor]:
        weights = dict(agent.actor.named_parameters())
        return {name: torch.ones_like(weights[name]) for name in shared_actor_names(agent)}
