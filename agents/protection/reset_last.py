"""Reset the last layers of actor and critics at every task start (the primacy-bias baseline).

Nikishin, Schwarzer, D'Oro, Bacon and Courville, "The primacy bias in deep reinforcement
learning", ICML 2022: periodically re-initialising the last layers of the agent's
networks (keeping the replay) restores its ability to learn. Here the period is the
task: at every task start but the first, the last ``layers`` parameterised layers of the
actor and of both critics (and of the target critics, set equal to the fresh critics)
get fresh weights from the networks' own initialisation, and Adam's moments of those
weights are zeroed.

Layers counted from the output: 1 = the output heads (actor ``mean``/``log_std``,
critic ``head``), 2 = also the last body layer, ... up to the recurrent cell. Default
``layers=1``: the paper resets the last layer of its Atari agents (SPR) and more for
SAC; with CW's one head per task the heads of old tasks are reset too.

Example:
    >>> from agents.nets.networks import Actor, NetworkConfig
    >>> reset_prefixes(Actor(NetworkConfig(input_dim=3, trunk="gru", hidden_sizes=(8, 8))), 2)
    ['body.layers.1.', 'mean.', 'log_std.']
    >>> ResetLast(layers=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: reset-last: layers must be a positive number of layers, got 0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from agents.nets.networks import Actor
from agents.protection.base import Protection
from agents.nets.units import fresh_network, optimizer_moments

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent


def layer_prefixes(net: nn.Module) -> list[list[str]]:
    """Parameter-name prefixes of every layer of an actor or Q network, input to output."""
    layers = [["cell."]] if net.config.recurrent else []
    for i in range(len(net.config.hidden_sizes)):
        layers.append([f"body.layers.{i}."] + (["body.norm."] if i == 0 and net.config.body == "cw" else []))
    layers.append(["mean.", "log_std."] if isinstance(net, Actor) else ["head."])
    return layers


def reset_prefixes(net: nn.Module, count: int) -> list[str]:
    """The prefixes of the last ``count`` layers of ``net``."""
    layers = layer_prefixes(net)
    if count > len(layers):
        raise ValueError(f"reset-last: layers={count}, but this network has only {len(layers)} layers")
    return [prefix for layer in layers[-count:] for prefix in layer]


class ResetLast(Protection):
    """Re-initialise the last ``layers`` layers of actor and critics at every task start after the first.

    Args:
        layers: how many layers from the output, >= 1 (1: the heads).
        seed: seeds the fresh weights (None: the agent's seed).
    """

    name = "reset-last"

    def __init__(self, layers: int = 1, seed: int | None = None) -> None:
        if layers < 1:
            raise ValueError(f"reset-last: layers must be a positive number of layers, got {layers}")
        self.layers, self.seed = int(layers), seed
        self.started = False
        self.resets = 0
        self.generator = torch.Generator()

    def setup(self, agent: "Agent") -> None:
        self.generator.manual_seed(agent.seed if self.seed is None else int(self.seed))
        for net in (agent.actor, agent.critic.q1):
            reset_prefixes(net, self.layers)  # a clear error now rather than at the first task switch

    @torch.no_grad()
    def on_task_start(self, agent: "Agent", task: int) -> None:
        if not self.started:
            self.started = True
            return
        actor = fresh_network(agent.actor, self.generator)
        critic = fresh_network(agent.critic, self.generator)
        prefixes = {"actor": reset_prefixes(agent.actor, self.layers),
                    "critic": [f"{q}.{p}" for q in ("q1", "q2") for p in reset_prefixes(agent.critic.q1, self.layers)]}
        for kind, net, fresh in (("actor", agent.actor, actor), ("critic", agent.critic, critic),
                                 ("critic", agent.target_critic, critic)):
            new = dict(fresh.named_parameters())
            for name, param in net.named_parameters():
                if name.startswith(tuple(prefixes[kind])):
                    param.copy_(new[name])
                    for moment in optimizer_moments(agent, param):
                        moment.zero_()
        self.resets += 1

    def state_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "seed": self.seed, "started": self.started, "resets": self.resets,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.generator.set_state(state.pop("generator").cpu())
        vars(self).update(state)
