"""EWC and online EWC: a quadratic penalty weighted by the policy's Fisher information.

Elastic weight consolidation (Kirkpatrick et al., PNAS 2017) weights each parameter's
move by the diagonal Fisher information of the finished task.

**Continual World's estimate** (``fisher="expected"``, the default; Wolczyk et al. 2021,
``continualworld/methods/ewc.py``, ``EWC_SAC._get_importance_weights``). For one state,
a parameter ``theta`` and the actor's outputs ``m_a`` (mean) and ``sigma_a = exp(log_std_a)``:

    F(theta) = sum_a ((d m_a / d theta)^2 + 2 (d sigma_a / d theta)^2) / (sigma_a^2 + 1e-6)

the closed form of a Gaussian's Fisher, with CW's 1e-6 stabiliser. CW's actor returns the
*squashed* mean, so ``m_a = tanh(mu_a)`` (``quantity="tanh_mean"``, the default), while
``sigma_a`` is the pre-tanh Gaussian's (log std clipped to [-20, 2]); this is not the Fisher
of the squashed policy, it is what CW computed. ``quantity="pre_tanh_mean"`` takes
``m_a = mu_a``, the exact Fisher of the pre-tanh Gaussian, which is also that of the squashed
policy (a bijection of a theta-free variable): invariant, and larger by
``(1 - tanh^2 mu_a)^-2`` on saturated dimensions, so CW's coefficient 1e4 means more there.
As in CW: the sum over action dims comes first, then each state's value is clipped at 1e-5
from below (per weight), then states are averaged (CW: the mean over 10 batches of the mean
over 256 states, i.e. the mean over 2,560 states), and tasks' Fishers are summed; the anchor
is the latest weights (so CW's "EWC" is, strictly, online EWC with ``gamma = 1``; Huszar
2018, Schwarz et al. 2018). CW's critic terms are off in its runs (``regularize_critic``
False) and are not implemented.

Recurrent agents: a row is a replayed sub-sequence and the unit is the sequence, the
squared gradient of the summed per-step log-likelihood ``sum_t log N(y_t; m_t, sigma_t)``
(Ehret et al., ICLR 2021). With ``recurrent_fisher="sampled"`` we estimate it by Monte
Carlo with ``y_t`` drawn from that Gaussian (one draw per step, histories as stored in the
replay), so it estimates the expected Fisher of the policy. Per-sequence gradients come from
``torch.func`` (``vmap`` over ``jacrev``) in chunks. Each sequence's squared gradient is
divided by its number of loss steps, which keeps CW's coefficient meaningful: the draws at
different steps are independent given the stored histories, so the cross terms vanish in
expectation and the estimate is unbiased for the closed form above averaged over the
sequence's steps (``recurrent_fisher="closed-form"`` computes that expectation exactly, at
``2 x T x |A|`` times the memory).

**Ehret et al.'s empirical Fisher** (``fisher="empirical"``; Ehret, Henning, Cervera,
Meulemans, von Oswald & Grewe, ICLR 2021; hypnettorch ``utils/ewc_regularizer.py``,
``compute_fisher(..., empirical_fisher=True, time_series=True)``): per row (a sequence, or
one transition for the MLP), the square of the gradient of the summed per-step
log-likelihood of the *replayed* actions, ``(d/d theta sum_t mask_t log pi(a_t | h_t))^2``,
averaged over rows, with no division by the length and no clip. ``log pi`` of a squashed
action is ``log N(atanh a_t; mu_t, sigma_t)`` up to a theta-free term (actions clamped to
``1 - 1e-6`` before ``atanh``); ``quantity`` does not apply. hypnettorch's penalty carries a
factor 1/2 (``ewc_regularizer``); ours does not (CW), so their ``lambda`` is our
``coefficient * 2``.

Which reproduces which paper: the default (``fisher="expected"``, ``quantity="tanh_mean"``)
is CW's EWC row (coefficient 1e4); ``fisher="empirical"`` is Ehret et al.'s recurrent EWC.

Online EWC (Schwarz et al., ICML 2018, "Progress & Compress") keeps one running Fisher
``F <- gamma * F_old + F_new``, applied once per task at consolidation, never per
training step; ``gamma`` (default 0.9: while the tenth task trains, the first task's
Fisher has weight 0.9^8 = 43%) trades old tasks' stability against plasticity;
``gamma = 1`` is :class:`EWC`.

Example:
    >>> import numpy as np
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(hidden_sizes=(8,)), spec=SpaceSpec(3, 3, 2, 2, False))
    >>> for t in range(20):
    ...     agent.replay.add(np.random.rand(3), np.zeros(2), 0.0, np.random.rand(3), False, False, task=0)
    >>> ewc = EWC(batches=2, batch_size=16)
    >>> ewc.on_task_end(agent, 0)
    >>> bool(min(f.min() for f in ewc.importance.values()) >= 1e-5), ewc.loss(agent, None).item()
    (True, 0.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
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

FISHER_CLIP = 1e-5  # CW: per-state Fisher clipped from below
SIGMA_EPS = 1e-6  # CW: 1 / (sigma^2 + 1e-6)
RECURRENT_FISHERS = ("sampled", "closed-form")
FISHERS = ("expected", "empirical")  # CW's closed form (or its MC estimate); Ehret et al.'s empirical
ACTION_CLAMP = 1.0 - 1e-6  # replayed actions before atanh (uniform random actions reach +-1)


def _per_row(steps: Tensor, like: Tensor) -> Tensor:
    """``steps [rows]`` shaped to divide a per-row tensor ``[rows, *shape]``."""
    return steps.view(-1, *([1] * (like.dim() - 1)))


def gaussian_fisher(actor: "Actor", names: list[str], inputs: Rows, clip: float = FISHER_CLIP,
                    eps: float = SIGMA_EPS, chunk_size: int = 64, quantity: str = "tanh_mean") -> dict[str, Tensor]:
    """The closed-form diagonal Fisher (CW's formula), averaged over rows.

    Each row's value is the closed form summed over action dims and averaged over its
    loss steps (one step for the MLP), clipped at ``clip``; rows are then averaged.

    Args:
        actor: the policy network.
        names: the parameters to weigh.
        inputs: rows as made by :func:`~agents.protection.common.actor_inputs`.
        quantity: the mean differentiated, ``"tanh_mean"`` (CW) or ``"pre_tanh_mean"``.
    """
    check_quantity(quantity)
    with torch.no_grad():
        _, log_std = run_actor(actor, inputs)
        variance = log_std.exp().square() + eps
    # Weights of (d mu)^2 and (d sigma)^2 for every step and action dim, in the order of `outputs`.
    weights = torch.cat([1.0 / variance, 2.0 / variance], dim=-1) * inputs["mask"].unsqueeze(-1)
    inputs = {**inputs, "fisher_weight": weights.flatten(1)}

    def outputs(params: dict[str, Tensor], row: Rows) -> Tensor:
        mean, log_std = run_actor(actor, row, params)
        return torch.cat([policy_mean(mean, quantity), log_std.exp()], dim=-1).flatten()

    def reduce(jacobians: dict[str, Tensor], chunk: Rows) -> dict[str, Tensor]:
        steps = chunk["mask"].sum(1).clamp(min=1.0)
        out = {}
        for name, jac in jacobians.items():  # [rows, K, *shape]
            weight = chunk["fisher_weight"].view(*chunk["fisher_weight"].shape, *([1] * (jac.dim() - 2)))
            fisher = (weight * jac.square()).sum(1)
            out[name] = (fisher / _per_row(steps, fisher)).clamp(min=clip).sum(0)
        return out

    total = summed_row_jacobians(actor, names, inputs, outputs, reduce, chunk_size)
    rows = inputs["mask"].shape[0]
    return {name: value / rows for name, value in total.items()}


def sampled_sequence_fisher(actor: "Actor", names: list[str], inputs: Rows, noise: Tensor,
                            clip: float = FISHER_CLIP, chunk_size: int = 64,
                            quantity: str = "tanh_mean") -> dict[str, Tensor]:
    """Monte Carlo per-sequence Fisher of the summed per-step log-likelihood.

    For every row, ``y_t = m_t + sigma_t * noise_t`` is drawn from the Gaussian with mean
    ``m_t`` (``tanh(mu_t)`` or ``mu_t``, see ``quantity``), and the row contributes
    ``(d/d theta sum_t mask_t log N(y_t; m_t, sigma_t))^2`` divided by its number of loss
    steps, clipped at ``clip``; rows are then averaged. Its expectation is
    :func:`gaussian_fisher` with the same ``quantity`` and ``clip=0``.

    Args:
        actor, names, inputs, quantity: as in :func:`gaussian_fisher`.
        noise: standard normal ``[rows, T, action_dim]`` (the caller owns the generator).
    """
    check_quantity(quantity)
    with torch.no_grad():
        mean, log_std = run_actor(actor, inputs)
    inputs = {**inputs, "sampled_action": policy_mean(mean, quantity) + noise * log_std.exp()}

    def outputs(params: dict[str, Tensor], row: Rows) -> Tensor:
        mean, log_std = run_actor(actor, row, params)
        z = (row["sampled_action"] - policy_mean(mean, quantity)) / log_std.exp()
        log_likelihood = (-0.5 * z.square() - log_std).sum(-1)  # constants have no gradient
        return (log_likelihood * row["mask"]).sum().view(1)

    def reduce(jacobians: dict[str, Tensor], chunk: Rows) -> dict[str, Tensor]:
        steps = chunk["mask"].sum(1).clamp(min=1.0)
        return {name: (jac[:, 0].square() / _per_row(steps, jac[:, 0])).clamp(min=clip).sum(0)
                for name, jac in jacobians.items()}

    total = summed_row_jacobians(actor, names, inputs, outputs, reduce, chunk_size)
    rows = inputs["mask"].shape[0]
    return {name: value / rows for name, value in total.items()}


def empirical_sequence_fisher(actor: "Actor", names: list[str], inputs: Rows, actions: Tensor,
                              chunk_size: int = 64) -> dict[str, Tensor]:
    """Ehret et al.'s empirical Fisher: per row, the squared gradient of the summed
    log-likelihood of the replayed actions; rows averaged; no length division, no clip.

    Args:
        actor, names, inputs: as in :func:`gaussian_fisher`.
        actions: the replayed (squashed) actions ``[rows, T, action_dim]`` in [-1, 1].

    Example:
        >>> from agents.nets.networks import Actor, NetworkConfig
        >>> actor = Actor(NetworkConfig(input_dim=2, action_dim=1, hidden_sizes=(3,)))
        >>> rows = {"obs": torch.zeros(2, 1, 2), "task": torch.zeros(2, 1, dtype=torch.long), "mask": torch.ones(2, 1)}
        >>> fisher = empirical_sequence_fisher(actor, ["mean.bias"], rows, torch.zeros(2, 1, 1))
        >>> mean, log_std = run_actor(actor, rows)  # score of mean.bias at a = 0: (0 - mu) / sigma^2
        >>> torch.allclose(fisher["mean.bias"], (mean / log_std.exp().square()).square().mean(0)[0])
        True
    """
    inputs = {**inputs, "pre_tanh_action": torch.atanh(actions.clamp(-ACTION_CLAMP, ACTION_CLAMP))}

    def outputs(params: dict[str, Tensor], row: Rows) -> Tensor:
        mean, log_std = run_actor(actor, row, params)
        z = (row["pre_tanh_action"] - mean) / log_std.exp()
        log_likelihood = (-0.5 * z.square() - log_std).sum(-1)  # the tanh correction has no theta
        return (log_likelihood * row["mask"]).sum().view(1)

    def reduce(jacobians: dict[str, Tensor], chunk: Rows) -> dict[str, Tensor]:
        return {name: jac[:, 0].square().sum(0) for name, jac in jacobians.items()}

    total = summed_row_jacobians(actor, names, inputs, outputs, reduce, chunk_size)
    rows = inputs["mask"].shape[0]
    return {name: value / rows for name, value in total.items()}


class EWC(WeightRegulariser):
    """EWC with CW's closed-form Fisher (or Ehret et al.'s empirical one), summed over tasks.

    Args:
        coefficient: CW20 table: 1e4.
        batches, batch_size: the Fisher is averaged over ``batches x batch_size`` replay
            rows of the finished task (CW: 10 x 256 states; recurrent agents:
            sub-sequences).
        clip: lower bound of each row's Fisher (CW: 1e-5; not used by ``"empirical"``).
        recurrent_fisher: ``"sampled"`` (Monte Carlo per-sequence Fisher, see the
            module docstring) or ``"closed-form"`` (its exact expectation; memory-heavy).
        chunk_size: rows per ``vmap`` call (bounds memory).
        quantity: ``"tanh_mean"`` (CW: the squashed mean) or ``"pre_tanh_mean"``
            (invariant); see the module docstring.
        fisher: ``"expected"`` (CW's closed form; recurrent: ``recurrent_fisher``) or
            ``"empirical"`` (Ehret et al. 2021: replayed actions, per sequence).
    """

    name = "ewc"

    def __init__(self, coefficient: float = 1e4, batches: int = 10, batch_size: int = 256, clip: float = FISHER_CLIP,
                 recurrent_fisher: str = "sampled", chunk_size: int = 64, quantity: str = "tanh_mean",
                 fisher: str = "expected") -> None:
        super().__init__(coefficient)
        if recurrent_fisher not in RECURRENT_FISHERS:
            raise ValueError(f"unknown recurrent_fisher {recurrent_fisher!r}; allowed: {', '.join(RECURRENT_FISHERS)}")
        if fisher not in FISHERS:
            raise ValueError(f"unknown fisher {fisher!r}; allowed: {', '.join(FISHERS)} "
                             "(expected: Continual World's closed form; empirical: Ehret et al. 2021)")
        self.quantity, self.fisher = check_quantity(quantity), fisher
        if batches <= 0 or batch_size <= 0 or chunk_size <= 0:
            raise ValueError(f"batches, batch_size and chunk_size must be positive, "
                             f"got {batches}, {batch_size}, {chunk_size}")
        self.batches, self.batch_size, self.clip = int(batches), int(batch_size), float(clip)
        self.recurrent_fisher, self.chunk_size = recurrent_fisher, int(chunk_size)

    def task_importance(self, agent: "Agent", task: int) -> dict[str, Tensor]:
        rows = sample_task_rows(agent, task, self.batches * self.batch_size)
        inputs = actor_inputs(agent, rows)
        names = shared_actor_names(agent)
        if self.fisher == "empirical":
            return empirical_sequence_fisher(agent.actor, names, inputs, rows["action"], self.chunk_size)
        if agent.recurrent and self.recurrent_fisher == "sampled":
            shape = (*inputs["mask"].shape, agent.spec.action_dim)
            noise = torch.randn(shape, generator=agent.generator, device=agent.device)
            return sampled_sequence_fisher(agent.actor, names, inputs, noise, self.clip, self.chunk_size, self.quantity)
        return gaussian_fisher(agent.actor, names, inputs, self.clip, chunk_size=self.chunk_size,
                               quantity=self.quantity)


class OnlineEWC(EWC):
    """Online EWC: ``F <- gamma * F_old + F_new`` once per task; the anchor is the latest weights.

    Args:
        gamma: decay of the old Fisher, applied once per consolidation (default 0.9,
            our choice: CW did not run online EWC; Schwarz et al. 2018 tune it below 1).
        **kwargs: as :class:`EWC` (coefficient 1e4 by default, like CW's EWC).
    """

    name = "online-ewc"

    def __init__(self, gamma: float = 0.9, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        self.gamma = float(gamma)

    def merge(self, old: Tensor, new: Tensor) -> Tensor:
        return self.gamma * old + new
