"""ReDo: recycle dormant units every few updates.

Sokar, Agarwal, Castro and Evci, "The dormant neuron phenomenon in deep reinforcement
learning", ICML 2023. Every ``every`` updates, on the update's batch, each unit ``j`` of a
unit layer (the MLP body's layers and the recurrent cell's hidden units, as defined in
:mod:`agents.nets.units`) gets the score

    s_j = E|h_j| / mean_k E|h_k|            (expectations over the batch; k over the layer)

and is *tau-dormant* when ``s_j <= tau``. Dormant units get fresh incoming weights from
the network's own initialisation and zero outgoing weights, and Adam's moments of those
weights are zeroed (the paper's recycling). Actor and both critics are treated; the
target critic follows by the polyak update.

Defaults: ``tau = 0.1`` and a recycling period of 1,000 updates (the paper's settings for
its continuous-control SAC experiments; its Atari DQN runs use tau 0.025 with the same
period; Dohare et al. 2024 run ReDo on PPO with 0.1 and 100). Difference: the scores
use the update's own batch (the paper samples one for the purpose), which saves a replay
draw and keeps the replay's random stream as without ReDo.

Example:
    >>> ReDo(tau=-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ReDo: tau must be >= 0 (the dormancy threshold on the normalised score), got -1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from agents.protection.base import Protection
from agents.nets.units import activations, fresh_network, networks, reinit_units, unit_layers

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent
    from agents.replay import Batch


def dormant_scores(h: Tensor) -> Tensor:
    """``s_j = E|h_j| / mean_k E|h_k|`` of activations ``[N, width]`` (0 where the whole layer is silent).

    Example:
        >>> dormant_scores(torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 2.0]])).tolist()
        [0.0, 1.5, 1.5]
    """
    magnitude = h.abs().mean(0)
    return magnitude / magnitude.mean().clamp_min(1e-12)


class ReDo(Protection):
    """Re-initialise tau-dormant units every ``every`` updates.

    Args:
        tau: dormancy threshold on the normalised score, >= 0 (0.1).
        every: updates between recyclings, > 0 (1,000).
        seed: seeds the fresh weights (None: the agent's seed).

    State: ``updates`` (counter), ``recycled`` (units re-initialised per layer), generator.
    """

    name = "redo"

    def __init__(self, tau: float = 0.1, every: int = 1000, seed: int | None = None) -> None:
        if tau < 0:
            raise ValueError(f"ReDo: tau must be >= 0 (the dormancy threshold on the normalised score), got {tau}")
        if every <= 0:
            raise ValueError(f"ReDo: every must be a positive number of updates, got {every}")
        self.tau, self.every, self.seed = float(tau), int(every), seed
        self.updates = 0
        self.recycled: dict[str, int] = {}
        self.generator = torch.Generator()
        self._batch: "Batch | None" = None

    def setup(self, agent: "Agent") -> None:
        self.generator.manual_seed(agent.seed if self.seed is None else int(self.seed))

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        self._batch = batch
        return None

    @torch.no_grad()
    def after_step(self, agent: "Agent") -> None:
        self.updates += 1
        if self.updates % self.every or self._batch is None:
            return
        for net_name, net in networks(agent):
            acts = activations(agent, net_name, net, self._batch)
            fresh = fresh_network(net, self.generator)
            for layer in unit_layers(net):
                units = torch.nonzero(dormant_scores(acts[layer.name]) <= self.tau).flatten()
                reinit_units(agent, net, layer, units, fresh)
                key = f"{net_name}/{layer.name}"
                self.recycled[key] = self.recycled.get(key, 0) + int(units.numel())
        self._batch = None

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "every": self.every, "seed": self.seed, "updates": self.updates,
                "recycled": dict(self.recycled), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.generator.set_state(state.pop("generator").cpu())
        vars(self).update(state)
