"""ClonEx-SAC: behavioural cloning of old policies plus best-return exploration over old heads.

Wolczyk, Zajac, Pascanu, Kucinski, Milos, "Disentangling Transfer in Continual
Reinforcement Learning" (NeurIPS 2022). ClonEx-SAC reached performance 0.87 and forward
transfer 0.54 on CW20 (Meta-World v1; see the README's comparison notes). The method is
two parts:

- **Cloning** (the ``"bc"`` mode of :class:`agents.protection.replay.Replay`, which this
  class extends without changing): at each task end 10,000 states of that task with the
  actor's Gaussian outputs on them are kept; every update adds ``100 x KL(old || new)``
  on 128 stored states and the SAC and cloning gradients are averaged.
- **Exploration** (``exploration="best_return"``): during a new task's random-steps
  phase (CW: the first 10,000 steps), instead of uniform-random actions each episode is
  acted by one *previous* task's head (the shared trunk with that task's output head,
  sampled stochastically): first every previous head once, in order, for one episode
  each; from then on the head with the best mean episode return so far (each episode
  adds to its head's mean, so the choice can change; ties go to the earliest head).
  The first task explores uniformly at random, and after the random-steps phase the
  current head acts as usual. The rule is the authors' ``ExplorationHelper``
  (kind ``"best_return"``), which public derivative code of theirs (``CL/rl/``, used
  with ``exploration_kind="best_return"``, ``cl_reg_coef=100``, episodic batch 128)
  carries; the original ClonEx repository was not available to read.

``exploration="random"`` keeps CW's uniform-random steps (plain behavioural cloning).

Deliberate differences: the cloning memory and loss are this repository's ``Replay("bc")``
(see its docstring: the Gaussian KL on the actor outputs, states from the finished
task's replay); episodes cut by a task boundary do not count. With a single shared head
(``heads="single"``) every candidate is the current policy, so exploration is simply the
agent's own policy; with ``task_in_trunk`` the trunk still reads the current task's
one-hot from the observation, only the head is the old task's.

Example:
    >>> method = ClonEx()
    >>> method.mode, method.coefficient, method.batch_size, method.memory_per_task
    ('bc', 100.0, 128, 10000)
    >>> method.head_returns = [[1.0], [3.0, 2.0], [2.0]]
    >>> method.explore_head = 1
    >>> method.choose_head()  # means 1.0, 2.5, 2.0
    1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from agents.protection.replay import Replay

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent

EXPLORATION = ("best_return", "random")


class ClonEx(Replay):
    """Behavioural cloning with best-return exploration over previous heads.

    Args:
        batch_size: stored states per cloning batch (ClonEx: 128).
        memory_per_task: states stored per finished task (ClonEx: 10,000).
        coefficient: weight of the cloning KL (ClonEx: 100).
        exploration: ``"best_return"`` (ClonEx) or ``"random"`` (uniform-random steps).

    State (in ``state_dict``): :class:`Replay`'s, plus ``head_returns`` (episode returns
    per previous head in the current task's exploration) and ``explore_head``.
    """

    name = "clonex"

    def __init__(self, batch_size: int | None = None, memory_per_task: int = 10_000, coefficient: float = 100.0,
                 exploration: str = "best_return") -> None:
        if exploration not in EXPLORATION:
            raise ValueError(f"unknown exploration {exploration!r}; allowed: {', '.join(EXPLORATION)}")
        super().__init__(mode="bc", batch_size=batch_size, memory_per_task=memory_per_task, coefficient=coefficient)
        self.exploration = exploration
        self.head_returns: list[list[float]] = []
        self.explore_head: int | None = None

    def on_task_start(self, agent: "Agent", task: int) -> None:
        super().on_task_start(agent, task)
        self.head_returns = [[] for _ in range(task)]
        self.explore_head = None

    def choose_head(self) -> int:
        """The first previous head not tried yet, else the one of best mean return."""
        for head, returns in enumerate(self.head_returns):
            if not returns:
                return head
        return int(np.argmax([np.mean(returns) for returns in self.head_returns]))

    def exploration_task(self, agent: "Agent", task: int) -> int | None:
        if self.exploration != "best_return" or task == 0 or not self.head_returns:
            return None
        if self.explore_head is not None and agent.last_episode_return is not None:
            self.head_returns[self.explore_head].append(float(agent.last_episode_return))
        self.explore_head = self.choose_head()
        return self.explore_head
