"""The quadratic weight penalty shared by L2, EWC, online EWC and MAS.

After every task but the last, the method *consolidates*: it takes the actor's shared
weights as the new anchor ``theta*`` and merges that task's per-weight importance ``w``
into the running importance. Every later update adds

    coefficient * sum_i w_i * (theta_i - theta*_i)^2

to the SAC loss (Continual World's ``Regularization_SAC``, Wolczyk et al. 2021: actor
only, one anchor at the latest weights, importances summed over tasks, no factor 1/2).
Subclasses say how important each weight was for the finished task
(:meth:`task_importance`) and how that merges with what came before (:meth:`merge`).

Example:
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> class Ones(WeightRegulariser):  # L2 in three lines
    ...     def task_importance(self, agent, task):
    ...         return {name: torch.ones_like(p) for name, p in agent.actor.named_parameters()}
    >>> agent = SAC(config=SACConfig(hidden_sizes=(4,)), spec=SpaceSpec(3, 3, 2, 2, False))
    >>> method = Ones(coefficient=10.0)
    >>> method.loss(agent, None) is None  # nothing to protect before the first task ends
    True
    >>> method.on_task_end(agent, 0)
    >>> method.loss(agent, None).item()
    0.0
    >>> with torch.no_grad():
    ...     _ = agent.actor.mean.bias.add_(0.1)  # two entries move by 0.1: 10 * 2 * 0.01
    >>> round(method.loss(agent, None).item(), 4)
    0.2
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agents.protection.base import Protection
from agents.protection.common import is_last_task

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent
    from agents.replay import Batch


class WeightRegulariser(Protection):
    """Base class: anchor, importance and the quadratic penalty.

    Args:
        coefficient: the penalty's weight (CW: L2 1e5, EWC 1e4, MAS 1e4).

    State (all in ``state_dict``): ``anchor`` and ``importance`` (name -> tensor),
    ``consolidated`` (the tasks merged so far, in order).
    """

    name = "weight-regulariser"

    def __init__(self, coefficient: float) -> None:
        if coefficient < 0:
            raise ValueError(f"the regularisation coefficient must be >= 0, got {coefficient}")
        self.coefficient = float(coefficient)
        self.anchor: dict[str, Tensor] = {}
        self.importance: dict[str, Tensor] = {}
        self.consolidated: list[int] = []

    def task_importance(self, agent: "Agent", task: int) -> dict[str, Tensor]:
        """Per-weight importance for the finished ``task`` (name -> tensor of the weight's shape)."""
        raise NotImplementedError

    def merge(self, old: Tensor, new: Tensor) -> Tensor:
        """Running importance after a task: CW sums them."""
        return old + new

    def on_task_end(self, agent: "Agent", task: int) -> None:
        if is_last_task(agent, task):
            return
        new = {name: value.detach() for name, value in self.task_importance(agent, task).items()}
        self.importance = {name: self.merge(self.importance[name], value) if name in self.importance else value
                           for name, value in new.items()}
        weights = dict(agent.actor.named_parameters())
        self.anchor = {name: weights[name].detach().clone() for name in new}
        self.consolidated.append(int(task))

    def penalty(self, agent: "Agent") -> Tensor | None:
        """``sum_i w_i (theta_i - theta*_i)^2`` (without the coefficient); None before any anchor."""
        if not self.anchor:
            return None
        weights = dict(agent.actor.named_parameters())
        return sum((self.importance[name] * (weights[name] - anchor).square()).sum()
                   for name, anchor in self.anchor.items())

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        penalty = self.penalty(agent)
        return None if penalty is None else self.coefficient * penalty
