"""Shrink-and-perturb: scale the weights down and add a little fresh initialisation.

Ash and Adams, "On warm-starting neural network training", NeurIPS 2020: before training
on new data, every weight becomes

    theta <- shrink * theta + perturb * theta_fresh

with ``theta_fresh`` a new draw from the network's initialisation (here the network's own
constructor, see :func:`agents.nets.units.fresh_network`). Applied at every task start but the
first (the paper's warm start) and, with ``every=k``, also after every ``k``-th update
(the continual form, as in Dohare et al. 2024's shrink-and-perturb runs). Actor and both
critics are treated; the target critic gets the same operation with the same fresh
weights, so it stays the average of critics it was. Adam's moments are left as they are
(CW makes a new optimizer at each task start anyway).

Defaults: ``shrink = 0.8``, ``perturb = 0.01``, the values of the common RL
reimplementations (e.g. the optax-style ``shrink_perturb`` transforms used in continual
RL code); the paper sweeps the two and picks per experiment. At ``shrink=1, perturb=0``
nothing would change, which is refused.

Example:
    >>> ShrinkPerturb(shrink=1.0, perturb=0.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: shrink-perturb with shrink=1 and perturb=0 changes nothing; ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from agents.protection.base import Protection
from agents.nets.units import fresh_network

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent


class ShrinkPerturb(Protection):
    """``theta <- shrink * theta + perturb * theta_fresh`` at task starts (and every ``every`` updates).

    Args:
        shrink: in [0, 1] (0.8).
        perturb: >= 0 (0.01).
        every: also after every ``every``-th update (None: only at task starts).
        at_task_start: apply at every task start after the first (True).
        seed: seeds the fresh weights (None: the agent's seed).
    """

    name = "shrink-perturb"

    def __init__(self, shrink: float = 0.8, perturb: float = 0.01, every: int | None = None,
                 at_task_start: bool = True, seed: int | None = None) -> None:
        if not 0.0 <= shrink <= 1.0:
            raise ValueError(f"shrink-perturb: shrink must lie in [0, 1], got {shrink}")
        if perturb < 0:
            raise ValueError(f"shrink-perturb: perturb must be >= 0, got {perturb}")
        if shrink == 1.0 and perturb == 0.0:
            raise ValueError("shrink-perturb with shrink=1 and perturb=0 changes nothing; use protection 'finetune'")
        if every is not None and every <= 0:
            raise ValueError(f"shrink-perturb: every must be a positive number of updates or None, got {every}")
        if every is None and not at_task_start:
            raise ValueError("shrink-perturb with every=None and at_task_start=False never acts; set one of them")
        self.shrink, self.perturb, self.every, self.at_task_start = float(shrink), float(perturb), every, at_task_start
        self.seed = seed
        self.updates = 0
        self.applied = 0
        self.started = False
        self.generator = torch.Generator()

    def setup(self, agent: "Agent") -> None:
        self.generator.manual_seed(agent.seed if self.seed is None else int(self.seed))

    @torch.no_grad()
    def apply(self, agent: "Agent") -> None:
        """One shrink-and-perturb of actor, critics and target critics."""
        actor = fresh_network(agent.actor, self.generator)
        critic = fresh_network(agent.critic, self.generator)
        for net, fresh in ((agent.actor, actor), (agent.critic, critic), (agent.target_critic, critic)):
            own = [p for _, p in net.named_parameters()]
            new = [p for _, p in fresh.named_parameters()]
            torch._foreach_mul_(own, self.shrink)
            torch._foreach_add_(own, new, alpha=self.perturb)
        self.applied += 1

    def on_task_start(self, agent: "Agent", task: int) -> None:
        if self.started and self.at_task_start:
            self.apply(agent)
        self.started = True

    def after_step(self, agent: "Agent") -> None:
        self.updates += 1
        if self.every is not None and self.updates % self.every == 0:
            self.apply(agent)

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if k != "generator"}
        return {**state, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.generator.set_state(state.pop("generator").cpu())
        vars(self).update(state)
