"""Continual backpropagation: keep replacing the least useful mature units with fresh ones.

Dohare et al., "Loss of plasticity in deep continual learning", Nature 632 (2024), and
their code (``shibhansh/loss-of-plasticity``, ``lop/algos/gnt.py``, the generate-and-test
of every hidden layer; the RL runs' settings in ``lop/rl/cfg/ant/cbp.yml``). After every
optimizer step, for every unit layer of the actor and both critics (what a unit is in the
MLP body and in a GRU/LSTM cell: :mod:`agents.nets.units`):

1. every unit ages by one update;
2. its utility is a running average (decay ``eta = 0.99``) of its *contribution*
   ``mean_batch |h_j| * mean_k |w_kj|`` (mean magnitude of its outgoing weights; the
   ``contribution`` utility of their RL runs), bias-corrected like Adam:
   ``u_j / (1 - eta ** age_j)``; the running mean activation ``f_j`` is kept the same way;
3. ``rate * (number of units older than maturity)`` units are due per update; the
   fractional part accumulates across updates (their ``accumulate`` option), so on
   average exactly that many are replaced;
4. the due units with the lowest corrected utility among the mature ones are replaced:
   fresh incoming weights drawn from the network's own initialisation, outgoing
   weights zeroed, the mean contribution ``w_kj * f_j`` moved into the bias of what
   reads them (so the outputs do not jump), age, utility and mean activation reset, and
   Adam's moments of every touched entry zeroed.

Defaults: replacement rate 1e-4 per update, maturity 10,000 updates, decay 0.99: the
values of their RL (PPO on Ant) configuration. Their supervised runs use maturity 100.

Deliberate differences, documented: (a) their Adam (``AdamGnT``) keeps a step count per
entry and resets it with the moments; torch's Adam has one step count per tensor, so
only the moments are zeroed (the first updates of a new unit then have slightly
smaller steps than theirs: the bias correction treats its zeroed moments as old ones);
(b) fresh weights come from this network's initialisation (Glorot uniform, orthogonal
recurrent rows, LayerNorm 1/0) rather than their Kaiming uniform bound, so a new unit
looks like the units the network started with; (c) the features are those of the
update's batch recomputed with the post-step weights (their code keeps the forward
pass's features; the step changes them by one learning-rate step); (d) the target
critic is left to the polyak update (their PPO has no target network): a replaced
critic unit fades in there at the polyak rate.

Example:
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(trunk="gru", hidden_sizes=(8,), rnn_size=4, batch_size=4, seq_len=2),
    ...             spec=SpaceSpec(3, 3, 1, 2, False), protection=ContinualBackprop(maturity=1, rate=0.5))
    >>> sorted(agent.protection.utility)
    ['actor/body.0', 'actor/cell', 'q1/body.0', 'q1/cell', 'q2/body.0', 'q2/cell']
    >>> ContinualBackprop(rate=2.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: continual backprop: rate must lie in [0, 1] (a fraction of the mature units per update), got 2.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from agents.protection.base import Protection
from agents.nets.units import activations, fresh_network, networks, outgoing_bias, reinit_units, unit_layers

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent
    from agents.replay import Batch

UTILITIES = ("contribution", "activation")  # "activation" ignores outgoing weights: a test's broken variant


class ContinualBackprop(Protection):
    """Generate-and-test of hidden units after every update (see the module docstring).

    Args:
        rate: fraction of the mature units replaced per update, in [0, 1] (1e-4).
        maturity: updates a unit must have lived before it can be replaced, > 0 (10,000).
        decay: running-average decay of utilities and mean activations, in [0, 1) (0.99).
        utility: ``"contribution"`` (Dohare et al.) or ``"activation"`` (ignores the
            outgoing weights; only for comparison).
        seed: seeds the fresh weights (None: the agent's seed).

    State: per unit layer (``"actor/cell"``, ``"q1/body.0"``...) ``utility``,
    ``mean_activation``, ``age`` and the accumulated fraction ``pending``; the
    generator; ``replaced`` (how many units were replaced, per layer).
    """

    name = "cbp"

    def __init__(self, rate: float = 1e-4, maturity: int = 10_000, decay: float = 0.99,
                 utility: str = "contribution", seed: int | None = None) -> None:
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"continual backprop: rate must lie in [0, 1] (a fraction of the mature units per update), got {rate}")
        if maturity <= 0:
            raise ValueError(f"continual backprop: maturity must be > 0 updates, got {maturity}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"continual backprop: decay must lie in [0, 1), got {decay}")
        if utility not in UTILITIES:
            raise ValueError(f"continual backprop: unknown utility {utility!r}; allowed: {', '.join(UTILITIES)}")
        self.rate, self.maturity, self.decay, self.utility_kind = float(rate), int(maturity), float(decay), utility
        self.seed = seed
        self.utility: dict[str, Tensor] = {}
        self.mean_activation: dict[str, Tensor] = {}
        self.age: dict[str, Tensor] = {}
        self.pending: dict[str, float] = {}
        self.replaced: dict[str, int] = {}
        self.generator = torch.Generator()
        self._batch: "Batch | None" = None

    def setup(self, agent: "Agent") -> None:
        self.generator.manual_seed(agent.seed if self.seed is None else int(self.seed))
        for net_name, net in networks(agent):
            for layer in unit_layers(net):
                key = f"{net_name}/{layer.name}"
                zeros = torch.zeros(layer.width, device=agent.device)
                self.utility[key], self.mean_activation[key] = zeros.clone(), zeros.clone()
                self.age[key] = zeros.clone()
                self.pending[key], self.replaced[key] = 0.0, 0

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        self._batch = batch  # the update's batch, for the features in after_step
        return None

    @torch.no_grad()
    def after_step(self, agent: "Agent") -> None:
        if self._batch is None or self.rate == 0.0:
            return
        for net_name, net in networks(agent):
            acts = activations(agent, net_name, net, self._batch)
            params = dict(net.named_parameters())
            fresh = None
            for layer in unit_layers(net):
                key = f"{net_name}/{layer.name}"
                units = self._test(key, layer, acts[layer.name], params)
                if units.numel():
                    fresh = fresh if fresh is not None else fresh_network(net, self.generator)
                    self._generate(agent, net, layer, key, units, fresh, params)
        self._batch = None

    def unit_utility(self, layer, h: Tensor, params: dict[str, Tensor]) -> Tensor:
        """This update's utility of every unit: ``mean|h_j| * mean_k |w_kj|`` over outgoing weights."""
        magnitude = h.abs().mean(0)
        if self.utility_kind == "activation":
            return magnitude
        total, count = torch.zeros_like(magnitude), 0
        every = torch.arange(layer.width, device=magnitude.device)
        for piece in layer.outgoing:
            w = params[piece.param].detach().index_select(piece.dim, layer.indices(piece, every)).abs()
            other = 1 - piece.dim
            total = total + w.sum(other)
            count += w.shape[other]
        return magnitude * total / count

    def _test(self, key: str, layer, h: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Update ages and utilities; the units to replace now (lowest corrected utility)."""
        age = self.age[key].add_(1.0)
        eta = self.decay
        correction = 1.0 - eta ** age
        self.mean_activation[key].mul_(eta).add_((1.0 - eta) * h.mean(0))
        self.utility[key].mul_(eta).add_((1.0 - eta) * self.unit_utility(layer, h, params))
        mature = torch.nonzero(age > self.maturity).flatten()
        if mature.numel() == 0:
            return mature
        self.pending[key] += self.rate * mature.numel()
        count = int(self.pending[key])
        self.pending[key] -= count
        if count == 0:
            return mature[:0]
        corrected = self.utility[key][mature] / correction[mature]
        return mature[torch.topk(-corrected, min(count, mature.numel())).indices]

    def _generate(self, agent: "Agent", net, layer, key: str, units: Tensor, fresh, params: dict[str, Tensor]) -> None:
        corrected_mean = self.mean_activation[key][units] / (1.0 - self.decay ** self.age[key][units])
        for piece in layer.outgoing:  # keep the outputs where they were: the unit's mean contribution goes to a bias
            bias = outgoing_bias(piece)
            if bias is not None and bias in params:
                w = params[piece.param].index_select(piece.dim, layer.indices(piece, units))
                params[bias].add_(w @ corrected_mean if piece.dim == 1 else w.T @ corrected_mean)
        reinit_units(agent, net, layer, units, fresh)
        self.age[key][units] = 0.0
        self.utility[key][units] = 0.0
        self.mean_activation[key][units] = 0.0
        self.replaced[key] += int(units.numel())

    def state_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "maturity": self.maturity, "decay": self.decay, "utility_kind": self.utility_kind,
                "seed": self.seed, "utility": {k: v.clone() for k, v in self.utility.items()},
                "mean_activation": {k: v.clone() for k, v in self.mean_activation.items()},
                "age": {k: v.clone() for k, v in self.age.items()}, "pending": dict(self.pending),
                "replaced": dict(self.replaced), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.generator.set_state(state.pop("generator").cpu())
        for key in ("utility", "mean_activation", "age"):
            state[key] = {k: v.clone() for k, v in state[key].items()}
        vars(self).update(state)
