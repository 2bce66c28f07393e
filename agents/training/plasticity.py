"""Plasticity readouts of the actor and critics, logged at every eval point.

For each network (``actor``, ``q1``, ``q2``), on one replay batch:

- ``dormant``: fraction of hidden units (all unit layers, :mod:`agents.nets.units`) that are
  tau-dormant in the sense of Sokar et al. (ICML 2023): score
  ``E|h_j| / mean_k E|h_k| <= tau`` within the unit's layer, tau = 0.1;
- ``srank``: effective rank of the last hidden layer's features (the heads' input),
  Kumar et al. (ICLR 2021, "Implicit under-parameterization"): the smallest ``k`` with
  ``sum_{i<=k} sigma_i >= (1 - delta) sum_i sigma_i`` over the singular values of the
  ``[N, width]`` feature matrix, delta = 0.01;
- ``weight_norm``: L2 norm of all the network's weights;
- ``grad_norm``: L2 norm of the gradient of the SAC loss (without protection terms) on
  the batch with respect to the network's weights.

Cheap by construction: one batch per eval point (not per update). The batch is drawn
with a generator seeded by ``(agent seed, step)`` in place of the replay's own, and the
agent's noise generator is restored afterwards, so logging changes nothing in training
(a resumed run logs the same numbers).

Example:
    >>> srank(torch.eye(4)[:, :3].repeat(2, 1))  # three equal singular values
    3
    >>> dormant_fraction([torch.tensor([[0.0, 1.0], [0.0, 1.0]])])  # one of two units silent
    0.5
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor

from agents.nets.units import activations, networks, unit_layers

if TYPE_CHECKING:  # pragma: no cover
    from agents.sac import SAC

DORMANT_TAU = 0.1
SRANK_DELTA = 0.01
READOUTS = ("dormant", "srank", "weight_norm", "grad_norm")
NETWORKS = ("actor", "q1", "q2")


def plasticity_columns() -> list[str]:
    """The ``plasticity/<network>/<readout>`` columns of progress.csv."""
    return [f"plasticity/{net}/{readout}" for net in NETWORKS for readout in READOUTS]


def dormant_fraction(layers: Sequence[Tensor], tau: float = DORMANT_TAU) -> float:
    """Fraction of units over ``layers`` (activations ``[N, width]`` each) whose normalised
    mean magnitude is ``<= tau`` (Sokar et al. 2023)."""
    dormant = total = 0
    for h in layers:
        magnitude = h.abs().mean(0)
        score = magnitude / magnitude.mean().clamp_min(1e-12)
        dormant += int((score <= tau).sum())
        total += h.shape[-1]
    return dormant / max(total, 1)


def srank(features: Tensor, delta: float = SRANK_DELTA) -> int:
    """Effective rank of ``features [N, width]`` (Kumar et al. 2021)."""
    sigma = torch.linalg.svdvals(features.double())
    if float(sigma.sum()) == 0.0:
        return 0
    cumulative = sigma.cumsum(0) / sigma.sum()
    return int((cumulative < 1.0 - delta).sum()) + 1


def metrics_batch(agent: "SAC", step: int, batch_size: int | None = None):
    """A replay batch drawn without touching the replay's own random stream (None: replay empty)."""
    if len(agent.replay) == 0:
        return None
    own = agent.replay.rng
    agent.replay.rng = np.random.default_rng([agent.seed, int(step)])
    try:
        return agent.replay.sample(batch_size or agent.config.batch_size, agent.device)
    except (ValueError, IndexError):  # not one complete window yet
        return None
    finally:
        agent.replay.rng = own


def plasticity_metrics(agent: "SAC", step: int) -> dict[str, float | None]:
    """Every readout of every network (None where there is no data yet)."""
    out: dict[str, float | None] = {column: None for column in plasticity_columns()}
    batch = metrics_batch(agent, step)
    if batch is None or batch.mask.sum() == 0:
        return out
    named = dict(networks(agent))
    if not any(p.requires_grad for net in named.values() for p in net.parameters()):
        return out  # networks without trainable weights (nothing to differentiate)
    generator_state = agent.generator.get_state()
    try:
        loss, _ = agent.compute_loss(batch, include_protection=False)
        params = {name: [p for p in net.parameters()] for name, net in named.items()}
        flat = [p for name in NETWORKS for p in params[name]]
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
    finally:
        agent.generator.set_state(generator_state)
    grads_by_net, start = {}, 0
    for name in NETWORKS:
        grads_by_net[name] = grads[start : start + len(params[name])]
        start += len(params[name])
    with torch.no_grad():
        for name in NETWORKS:
            net = named[name]
            acts = activations(agent, name, net, batch)
            layers = [acts[layer.name] for layer in unit_layers(net)]
            out[f"plasticity/{name}/dormant"] = dormant_fraction(layers)
            out[f"plasticity/{name}/srank"] = float(srank(layers[-1]))
            out[f"plasticity/{name}/weight_norm"] = float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p) for p in params[name]])))
            norms = [torch.linalg.vector_norm(g) for g in grads_by_net[name] if g is not None]
            out[f"plasticity/{name}/grad_norm"] = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    return out
