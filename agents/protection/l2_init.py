"""L2-init (regenerative regularisation): pull every weight towards its initial value.

Kumar, Marklund and Van Roy, "Maintaining plasticity in continual learning via
regenerative regularization" (CoLLAs 2024, arXiv 2308.11958): the loss gets
``coefficient * ||theta - theta_0||^2`` with ``theta_0`` the weights at initialisation
(kept for the whole run, unlike L2 towards the last task's weights, which protects old
tasks; this one keeps the network near a trainable point). Applied to the actor and both
critics (all their weights); the entropy coefficients are left alone.

Default coefficient 1e-2, the largest of the paper's sweep {1e-2, 1e-3, 1e-4, 1e-5}
(the paper tunes it per problem); the penalty is summed over weights, as in the paper.

Example:
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(hidden_sizes=(4,)), spec=SpaceSpec(3, 3, 1, 2, False), protection=L2Init(0.5))
    >>> agent.protection.loss(agent, None).item()
    0.0
    >>> with torch.no_grad():
    ...     _ = agent.actor.mean.bias.add_(1.0)   # 2 entries move by 1: 0.5 * 2
    >>> agent.protection.loss(agent, None).item()
    1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agents.protection.base import Protection

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent
    from agents.replay import Batch


def _weights(agent: "Agent") -> dict[str, Tensor]:
    return {**{f"actor.{k}": v for k, v in agent.actor.named_parameters()},
            **{f"critic.{k}": v for k, v in agent.critic.named_parameters()}}


class L2Init(Protection):
    """``coefficient * sum ||theta - theta_0||^2`` over actor and critic weights.

    Args:
        coefficient: >= 0 (1e-2).

    State: ``initial`` (name -> the weights at setup).
    """

    name = "l2-init"

    def __init__(self, coefficient: float = 1e-2) -> None:
        if coefficient < 0:
            raise ValueError(f"l2-init: the coefficient must be >= 0, got {coefficient}")
        self.coefficient = float(coefficient)
        self.initial: dict[str, Tensor] = {}

    def setup(self, agent: "Agent") -> None:
        self.initial = {name: p.detach().clone() for name, p in _weights(agent).items()}

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        weights = _weights(agent)
        return self.coefficient * sum((weights[name] - init).square().sum() for name, init in self.initial.items())
