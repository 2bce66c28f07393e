"""The hook protocol through which protection methods plug into the agent.

Every hook is optional: a method overrides what it needs, and the agent calls only what
a method defines (see :func:`defines`), so an unused hook costs nothing in the update.

============================  ======================================================  ==========================
hook                          when the agent calls it                                 used by (issue 6)
============================  ======================================================  ==========================
``setup(agent)``              once, when the agent is built: networks and replay      replay (perfect memory
                              exist, no optimizer yet, nothing stored, nothing        swaps the replay)
                              restored from a checkpoint
``on_task_start(agent, t)``   a new task begins: before the replay is cleared and     PackNet, HNET, replay
                              the optimizer is reset (rebuilt: new tensors join it)
``on_task_end(agent, t)``     the task's budget is spent; its replay still holds      EWC/MAS, PackNet, A-GEM,
                              the task's data; before the evaluation of that step     BC, HNET
``loss(agent, batch)``        every update; the returned scalar is added to the       L2, EWC, MAS, HNET, BC
                              SAC loss before one backward pass (a term over critic
                              weights regularises the critic too)
``after_backward(agent)``     between backward and the optimizer step                 PackNet, A-GEM
``after_step(agent)``         right after every optimizer step (before the target     CBP, ReDo, shrink-and-
                              critic's polyak update): edit weights and optimizer     perturb (every k updates)
                              state in place, e.g. replace units (issue 12)
``task_parameters(agent, t)`` whenever the actor runs for task ``t`` (acting,         HNET, PackNet at test time
                              updates, evaluation); a dict of actor weights (full
                              or partial) or None for the actor's own
``trainable_parameters(agent)`` when an optimizer is made: extra tensors the method    HNET
                              trains together with the agent
``exploration_task(agent, t)``  at each episode start of task ``t``'s random-steps      ClonEx
                              phase: act with this task's head/weights instead of
                              uniform-random actions (None: random actions);
                              ``agent.last_episode_return`` is the return of the
                              episode just finished in this task (None at its first)
``critic_parameters(agent, t)`` every update: a full dict of critic weights (named as     HNET (generate_critic)
                              ``agent.critic``) the SAC losses use instead of the
                              critics' own, or None; the target critics then track
                              these (detached) in the polyak update
``state_dict()`` /            checkpoint / resume                                     all
``load_state_dict(state)``
============================  ======================================================  ==========================

The agent exposes what methods need: ``agent.actor``, ``agent.critic``,
``agent.target_critic``, ``agent.replay``, ``agent.optimizer``, ``agent.current_task``,
``agent.num_tasks``, ``agent.device``, ``agent.net_obs(obs)`` (the part of an observation
the networks read), ``agent.compute_loss(batch)`` (the SAC loss of a batch, for A-GEM's
memory gradient) and ``agent.gradient_step()`` (one update on the replay, for PackNet's
retraining).

Example:
    >>> class CountTasks(Protection):
    ...     name = "count"
    ...     def __init__(self):
    ...         self.ended = []
    ...     def on_task_end(self, agent, task):
    ...         self.ended.append(task)
    >>> method = CountTasks()
    >>> defines(method, "on_task_end"), defines(method, "loss")
    (True, False)
    >>> method.state_dict()
    {'ended': []}
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from agents.nets.networks import Actor, TwinCritic
    from agents.replay import Batch, SequenceReplay, TransitionReplay


class Agent(Protocol):
    """What a protection method may read and call of the agent it protects.

    :class:`agents.sac.SAC` (and every member of :class:`agents.population.Population`) is one.
    Methods are typed against this protocol, not against ``SAC``, so that ``agents.protection``
    does not depend on the agent that uses it (``agents.sac`` imports ``agents.protection``).
    """

    config: Any  # agents.sac.SACConfig
    spec: Any  # agents.sac.SpaceSpec
    env: Any
    seed: int
    device: torch.device
    protection: Protection
    num_tasks: int
    num_heads: int
    recurrent: bool
    current_task: int
    last_episode_return: float | None
    actor: Actor
    critic: TwinCritic
    target_critic: TwinCritic
    log_alpha: torch.nn.Parameter
    generator: torch.Generator
    replay: TransitionReplay | SequenceReplay
    optimizer: torch.optim.Optimizer

    def net_obs(self, obs: Tensor) -> Tensor: ...

    def actor_params(self, task: int) -> dict[str, Tensor] | None: ...

    def compute_loss(self, batch: Batch, include_protection: bool = True) -> tuple[Tensor, dict[str, Tensor]]: ...

    def gradient_step(self) -> None: ...

    def reset_optimizer(self, mode: str | None = None) -> None: ...

    def learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> Any: ...

HOOKS = (
    "setup", "on_task_start", "on_task_end", "loss", "after_backward", "after_step", "task_parameters",
    "trainable_parameters", "exploration_task", "critic_parameters",
)


class Protection:
    """Base class of protection methods: every hook does nothing until overridden.

    ``state_dict`` defaults to a deep copy of the instance's attributes, which suits
    methods whose state is tensors, arrays and plain values; override it when that is
    not so (e.g. to leave out a reference to the agent).
    """

    name = "base"

    def setup(self, agent: "Agent") -> None:
        """The agent is built (before its first optimizer, before anything is stored)."""

    def on_task_start(self, agent: "Agent", task: int) -> None:
        """A new task begins."""

    def on_task_end(self, agent: "Agent", task: int) -> None:
        """The task's budget is spent."""

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        """A scalar added to the SAC loss of every update (None: nothing)."""
        return None

    def after_backward(self, agent: "Agent") -> None:
        """Edit ``.grad`` of the agent's parameters before the optimizer step."""

    def after_step(self, agent: "Agent") -> None:
        """Edit the agent's weights (and optimizer state) right after an optimizer step.

        Runs under the caller's autograd mode; wrap edits in ``torch.no_grad()``. Weights
        the target critic should follow at once must be copied there too (the polyak
        update that follows moves it only by ``1 - polyak``).
        """

    def task_parameters(self, agent: "Agent", task: int) -> dict[str, Tensor] | None:
        """Actor weights to use for ``task`` (None: the actor's own)."""
        return None

    def trainable_parameters(self, agent: "Agent") -> list[Tensor]:
        """Extra tensors for the agent's optimizer."""
        return []

    def exploration_task(self, agent: "Agent", task: int) -> int | None:
        """At an episode start in ``task``'s random-steps phase: the task whose policy acts
        in this episode's random steps (None: uniform-random actions)."""
    def critic_parameters(self, agent: "Agent", task: int) -> dict[str, Tensor] | None:
        """Critic weights for the updates of ``task`` (None: the critics' own)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(copy.deepcopy(state))


def defines(method: Any, hook: str) -> bool:
    """Whether ``method`` implements ``hook`` itself (not the do-nothing default).

    Methods need not subclass :class:`Protection`; any object with some of the hooks works.
    """
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; hooks: {', '.join(HOOKS)}")
    implementation = getattr(type(method), hook, None)
    return implementation is not None and implementation is not getattr(Protection, hook)
