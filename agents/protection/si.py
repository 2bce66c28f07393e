"""SI: synaptic intelligence, a weight's importance from its share of the loss decrease.

Zenke, Poole & Ganguli, "Continual learning through synaptic intelligence" (ICML 2017;
code: ``ganguli-lab/pathint``). While a task trains, every optimizer step adds to a running
path integral per weight

    omega_k += -g_k * delta_theta_k

with ``g`` the gradient of the task loss at the step and ``delta_theta`` the step the
optimizer actually took: how much that weight's move lowered the loss. When the task
ends, its importance is

    Omega_k(task) = max(0, omega_k / (Delta_k^2 + xi)),   Delta_k = theta_k(end) - theta_k(start)

(``xi`` damps weights that hardly moved), summed over tasks, and every later update adds
``coefficient * sum_k Omega_k (theta_k - theta*_k)^2`` with ``theta*`` the weights at the end
of the latest task (:class:`~agents.protection.regulariser.WeightRegulariser`, the
penalty L2, EWC and MAS share; no factor 1/2, as in Zenke's ``quadratic_regularizer``).

Choices, and whose they are:

- **Which weights**: the actor's shared weights, the heads left out when there is one per
  task, as for L2/EWC/MAS (:func:`~agents.protection.common.shared_actor_names`).
- **Which gradient** (``gradient="task"``, default): the gradient of the actor's loss
  without SI's own penalty, Zenke's ``unreg_grads`` and Ehret et al.'s
  ``--si_task_loss_only`` (the setting of their copy-task SI run). The penalty's gradient
  ``2 c Omega (theta - theta*)`` is known in closed form and subtracted from what the
  backward pass left; terms of other members of a composite (e.g. ``replay+si``) stay in.
  ``gradient="total"`` keeps the penalty's gradient too, the default of Ehret et al.'s code
  (``cl_in_rnns/utils/si_regularizer.py``, ``si_post_optim_step``). Gradients are read
  before clipping (off by default).
- **Damping** ``xi = 1e-3``: Ehret et al.'s value (``si_compute_importance(epsilon=1e-3)``,
  recurrent networks, ICLR 2021) and Zenke's for split CIFAR; Zenke used 0.1 on permuted
  MNIST.
- **Negative importances** are clipped to 0 per task, as in Ehret et al.'s code (Zenke
  applies the ReLU to the running sum instead); a negative path integral would push a
  weight away from its old value.
- **Coefficient** 1.0: the default ``si_lambda`` of Ehret et al.'s code (their copy-task
  run used 0.01; Zenke's c ranged 0.01-1). Not tuned for SAC: the actor's loss is not a
  decreasing training loss, so path integrals are noisier here than in supervised
  learning.

Example:
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(hidden_sizes=(4,)), spec=SpaceSpec(3, 3, 2, 2, False))
    >>> si = SI()
    >>> si.on_task_start(agent, 0)
    >>> si.loss(agent, None) is None  # nothing consolidated yet
    True
    >>> si.on_task_end(agent, 0)      # no step was taken: every path integral is 0
    >>> sum(float(w.sum()) for w in si.importance.values()), si.loss(agent, None).item()
    (0.0, 0.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agents.protection.common import is_last_task, shared_actor_names
from agents.protection.regulariser import WeightRegulariser

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent

GRADIENTS = ("task", "total")


class SI(WeightRegulariser):
    """Synaptic intelligence: path-integral importance, quadratic penalty, summed over tasks.

    Args:
        coefficient: the penalty's weight ``c`` (default 1.0, see the module docstring).
        xi: damping of ``Delta^2`` in the importance (default 1e-3, Ehret et al.).
        gradient: ``"task"`` (the actor's loss without SI's penalty; Zenke) or ``"total"``
            (with it; the default of Ehret et al.'s code).

    State (all in ``state_dict``): as :class:`WeightRegulariser`, plus ``running`` (the path
    integral of the task being trained) and ``start`` (its weights when it started).
    """

    name = "si"

    def __init__(self, coefficient: float = 1.0, xi: float = 1e-3, gradient: str = "task") -> None:
        super().__init__(coefficient)
        if not xi > 0:
            raise ValueError(f"xi must be positive (it damps Delta^2 in a division), got {xi}")
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown gradient {gradient!r}; allowed: {', '.join(GRADIENTS)} "
                             "(task: the actor's loss without SI's penalty, Zenke et al.; total: with it)")
        self.xi, self.gradient = float(xi), gradient
        self.running: dict[str, Tensor] = {}
        self.start: dict[str, Tensor] = {}
        self._pending: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None

    def _shared(self, agent: "Agent") -> dict[str, Tensor]:
        weights = dict(agent.actor.named_parameters())
        return {name: weights[name] for name in shared_actor_names(agent)}

    def on_task_start(self, agent: "Agent", task: int) -> None:
        self.start = {name: p.detach().clone() for name, p in self._shared(agent).items()}
        self.running = {name: torch.zeros_like(p) for name, p in self.start.items()}

    def after_backward(self, agent: "Agent") -> None:
        if not self.start:  # an agent driven without task starts (tests): its weights now
            self.on_task_start(agent, agent.current_task)
        gradients, before = {}, {}
        for name, p in self._shared(agent).items():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if self.gradient == "task" and name in self.anchor:  # the penalty's own pull, in closed form
                g -= 2.0 * self.coefficient * self.importance[name] * (p.detach() - self.anchor[name])
            gradients[name], before[name] = g, p.detach().clone()
        self._pending = gradients, before

    def after_step(self, agent: "Agent") -> None:
        if self._pending is None:
            return
        gradients, before = self._pending
        weights = self._shared(agent)
        for name, g in gradients.items():
            # omega += -g * delta_theta: positive where the step went down the task loss.
            self.running[name] -= g * (weights[name].detach() - before[name])
        self._pending = None

    def task_importance(self, agent: "Agent", task: int) -> dict[str, Tensor]:
        importance = {}
        for name, p in self._shared(agent).items():
            moved = p.detach() - self.start[name]
            importance[name] = (self.running[name] / (moved.square() + self.xi)).clamp(min=0.0)
        return importance

    def on_task_end(self, agent: "Agent", task: int) -> None:
        if is_last_task(agent, task):
            return
        if not self.start:
            self.on_task_start(agent, task)
        super().on_task_end(agent, task)
        # The next task's path integral starts from zero at these weights (on_task_start repeats it).
        self.on_task_start(agent, task + 1)
