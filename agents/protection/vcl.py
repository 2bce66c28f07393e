"""VCL: a variational actor whose prior for each task is the previous task's posterior.

Variational Continual Learning (Nguyen et al., ICLR 2018) as Continual World ran it
(Wolczyk et al., NeurIPS 2021; ``continualworld/methods/vcl.py``, ``VclMlpActor`` and
``VCL_SAC``; the CW20 table's row ``--cl_method=vcl --cl_reg_coef=1.0
--vcl_first_task_kl=False``, ``examples/paper_cl_experiments.sh``):

- every dense weight and bias of the actor (trunk and both output heads) has a Gaussian
  posterior ``N(mu, exp(log_var))``; ``mu`` is the actor's own tensor (initialised as
  usual: Glorot-uniform weights, zero biases), ``log_var`` starts at -6 for every entry;
  LayerNorm parameters are point estimates;
- the prior starts as ``N(0, 1)``; at the end of a task the posterior of the shared
  layers becomes the next task's prior (CW copies it at the next task's start, which is
  the same);
- the actor runs with weights sampled by reparametrisation, one sample per actor call
  (shared by the rows of the batch), in the updates and when acting, evaluation
  included: CW's deterministic test episodes take the mean action of sampled weights;
- loss: ``coefficient x KL(posterior || prior)`` summed over every regularised entry
  (no division by the data size), added to the actor loss; coefficient 1.0; no KL on
  the first task (``first_task_kl=False``);
- with one head per task, the heads are variational but their prior stays ``N(0, 1)``
  and they are regularised (the current task's slice only) only when ``first_task_kl``
  is True; with a single head the head is shared and treated like the trunk;
- LayerNorm is frozen from the second task on (CW sets it non-trainable);
- the critic is a plain network (CW refuses ``regularize_critic`` for VCL).

Deliberate differences (all small):

- one weight sample per update serves both the actor term and the next-state actions of
  the critic target (CW draws one for each actor call, two per update);
- recurrent trunks: the GRU/LSTM cell's weights and biases are variational too (CW had
  only the MLP); a new sample is drawn at every acting step, as CW does for the MLP;
- ``act_with="mean"`` (not CW) acts and evaluates with the posterior means instead.

Example:
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> vcl = VCL()
    >>> agent = SAC(config=SACConfig(hidden_sizes=(4,)), spec=SpaceSpec(3, 3, 1, 2, False), protection=vcl)
    >>> sorted(vcl.log_var)[:2], vcl.log_var["mean.weight"][0, 0].item()
    (['body.layers.0.bias', 'body.layers.0.weight'], -6.0)
    >>> vcl.loss(agent, None) is None  # first task: no KL (CW's first_task_kl=False)
    True
    >>> vcl.on_task_end(agent, 0)
    >>> agent.current_task = 1
    >>> round(vcl.loss(agent, None).item(), 6)  # the posterior is its own prior
    0.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from agents.protection.base import Protection
from agents.protection.common import HEAD_PREFIXES

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent
    from agents.replay import Batch

ACT_WITH = ("sample", "mean")
NORM_MARK = "norm."


def gaussian_kl_sum(mean: Tensor, log_var: Tensor, prior_mean: Tensor, prior_log_var: Tensor) -> Tensor:
    """``KL(N(mean, e^log_var) || N(prior_mean, e^prior_log_var))`` summed over all entries.

    Example:
        >>> zero = torch.zeros(3)
        >>> float(gaussian_kl_sum(zero, zero, zero, zero)), float(gaussian_kl_sum(zero + 1, zero, zero, zero))
        (0.0, 1.5)
    """
    ratio = (log_var - prior_log_var).exp()
    return 0.5 * (ratio + (mean - prior_mean).square() / prior_log_var.exp() - 1.0 - (log_var - prior_log_var)).sum()


class VCL(Protection):
    """Variational actor with the previous task's posterior as prior (see the module docstring).

    Args:
        coefficient: weight of the KL (CW20 table: 1.0).
        first_task_kl: regularise on the first task too (towards ``N(0, 1)``), and the
            current head of a multi-head actor on every task (CW20 table: False).
        init_log_var: initial posterior log-variance of every weight (CW: -6).
        act_with: ``"sample"`` (CW: sampled weights when acting and evaluating) or
            ``"mean"`` (the posterior means).

    State (in ``state_dict``): the settings, ``log_var`` (posterior log-variances),
    ``prior_mean`` and ``prior_log_var`` per variational actor tensor, ``tasks_ended``.
    """

    name = "vcl"

    def __init__(self, coefficient: float = 1.0, first_task_kl: bool = False, init_log_var: float = -6.0,
                 act_with: str = "sample") -> None:
        if coefficient < 0:
            raise ValueError(f"coefficient must be >= 0, got {coefficient}")
        if act_with not in ACT_WITH:
            raise ValueError(f"unknown act_with {act_with!r}; allowed: {', '.join(ACT_WITH)}")
        self.coefficient, self.first_task_kl = float(coefficient), bool(first_task_kl)
        self.init_log_var, self.act_with = float(init_log_var), act_with
        self.log_var: dict[str, Tensor] = {}
        self.prior_mean: dict[str, Tensor] = {}
        self.prior_log_var: dict[str, Tensor] = {}
        self.head_names: list[str] = []  # per-task heads (multi-head actors): prior stays N(0, 1)
        self.num_heads = 1
        self.tasks_ended = 0

    # ------------------------------------------------------------------ set-up
    def setup(self, agent: "Agent") -> None:
        if self.log_var:  # restored before set-up (SAC.load builds, then loads): keep the state
            return
        self.num_heads = agent.num_heads
        for name, p in agent.actor.named_parameters():
            if NORM_MARK in name:
                continue
            self.log_var[name] = torch.full_like(p, self.init_log_var).requires_grad_(True)
            self.prior_mean[name] = torch.zeros_like(p)
            self.prior_log_var[name] = torch.zeros_like(p)
        self.head_names = [n for n in self.log_var if agent.num_heads > 1 and n.startswith(HEAD_PREFIXES)]

    def trainable_parameters(self, agent: "Agent") -> list[Tensor]:
        return list(self.log_var.values())

    # ------------------------------------------------------------------ the weights the actor runs with
    def sample(self, agent: "Agent") -> dict[str, Tensor]:
        """One reparametrised sample ``mu + exp(log_var / 2) * eps`` of every variational tensor."""
        own = dict(agent.actor.named_parameters())
        out = {}
        for name, log_var in self.log_var.items():
            mean = own[name]
            eps = torch.randn(mean.shape, generator=agent.generator, device=mean.device, dtype=mean.dtype)
            out[name] = mean + (0.5 * log_var).exp() * eps
        return out

    def task_parameters(self, agent: "Agent", task: int) -> dict[str, Tensor] | None:
        # Updates run with gradients, acting and evaluation without (the agent's no_grad).
        if self.act_with == "mean" and not torch.is_grad_enabled():
            return None
        return self.sample(agent)

    # ------------------------------------------------------------------ the KL
    def _head_slice(self, name: str, value: Tensor, task: int) -> Tensor:
        """The rows of ``value`` that belong to ``task``'s head (heads are stacked by task)."""
        return value.unflatten(0, (self.num_heads, -1))[task]

    def kl(self, agent: "Agent") -> Tensor:
        """``KL(posterior || prior)`` of the regularised entries (without the coefficient)."""
        own = dict(agent.actor.named_parameters())
        task = max(agent.current_task, 0)
        total = torch.zeros((), device=agent.device)
        for name, log_var in self.log_var.items():
            mean, prior_mean, prior_log_var = own[name], self.prior_mean[name], self.prior_log_var[name]
            if name in self.head_names:
                if not self.first_task_kl:
                    continue
                mean, log_var, prior_mean, prior_log_var = (self._head_slice(name, v, task)
                                                            for v in (mean, log_var, prior_mean, prior_log_var))
            total = total + gaussian_kl_sum(mean, log_var, prior_mean, prior_log_var)
        return total

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        if self.coefficient == 0.0 or (self.tasks_ended == 0 and not self.first_task_kl):
            return None
        return self.coefficient * self.kl(agent)

    def after_backward(self, agent: "Agent") -> None:
        if self.tasks_ended == 0:
            return
        for name, p in agent.actor.named_parameters():  # CW: LayerNorm non-trainable after the first task
            if NORM_MARK in name:
                p.grad = None

    def on_task_end(self, agent: "Agent", task: int) -> None:
        """The posterior of the shared layers becomes the prior of what follows."""
        own = dict(agent.actor.named_parameters())
        with torch.no_grad():
            for name, log_var in self.log_var.items():
                if name not in self.head_names:
                    self.prior_mean[name] = own[name].detach().clone()
                    self.prior_log_var[name] = log_var.detach().clone()
        self.tasks_ended += 1

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; posterior log-variances are copied into the existing tensors (the
        optimizer holds those) when the protection is already set up."""
        state = dict(state)
        saved = state.pop("log_var")
        super().load_state_dict(state)
        if self.log_var and set(self.log_var) == set(saved):
            with torch.no_grad():
                for name, value in saved.items():
                    self.log_var[name].copy_(value)
        else:
            self.log_var = {name: value.detach().clone().requires_grad_(True) for name, value in saved.items()}
