"""Replay of old tasks: a perfect memory of everything, or cloning of old policies.

``mode="reservoir"``, Continual World's *perfect memory* (Wolczyk et al. 2021): the
agent's replay is never emptied at a task change and holds every step of the run, and
the SAC batch grows to 512; old tasks are simply trained on again. The method sets this
up through the agent's replay configuration before the first step is stored (see
:meth:`Replay.trainable_parameters`): ``replay_mode="reservoir"`` (MLP; every step ever
offered kept with equal probability once the buffer is full), ``replay_size`` = the
whole run's steps (so nothing is dropped), ``reset_replay_on_task_change=False`` and
``batch_size=512``. The changed config is what the agent saves, so a loaded agent
rebuilds the same replay.
Recurrent agents keep their FIFO sequence replay (a reservoir would cut stored episodes
apart); with the capacity of the whole run it too holds everything.

``mode="bc"``, behavioural cloning of old policies as in ClonEx (Wolczyk et al., NeurIPS
2022, "Disentangling transfer in continual RL"): at the end of each task but the last,
10,000 states of its replay (recurrent agents: sub-sequences with about as many steps)
are stored with the old actor's Gaussian (mean and log std of that task's head); every
update then adds ``100 x KL(old || new)`` on 128 stored rows. As in the episodic code that
ClonEx builds on (``Episodic_SAC.kl_divergence`` over ``continualworld``'s actor), the KL
is by default between Gaussians whose means are the *squashed* means ``tanh(mu)`` (what
CW's actor returns) and whose stds are the pre-tanh ones plus 1e-6
(``quantity="tanh_mean"``): ``sum_a log(s_a/s'_a) + ((s'_a + 1e-6)^2 + (m'_a - m_a)^2) /
(2 (s_a + 1e-6)^2) - 1/2`` with primes for the old policy. ``quantity="pre_tanh_mean"``
takes the KL between the pre-tanh Gaussians (no 1e-6), which equals the KL between the
squashed policies (tanh is a bijection): invariant, and larger than CW's on saturated
dimensions. "The cloning and SAC gradients are averaged" (ClonEx's ``merge_gradients``:
``(g_sac + g_bc) / 2`` for the actor, critic untouched): the agent backpropagates the
sum, and :meth:`Replay.after_backward` halves the actor's gradient. Under Adam a
constant factor within a task changes nothing but the epsilon's weight; it is kept for
fidelity and for other optimisers.

Example:
    >>> import numpy as np
    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> agent = SAC(config=SACConfig(hidden_sizes=(8,)), spec=SpaceSpec(3, 3, 2, 2, False))
    >>> for t in range(20):
    ...     agent.replay.add(np.random.rand(3), np.zeros(2), 0.0, np.random.rand(3), False, False, task=0)
    >>> bc = Replay(mode="bc", memory_per_task=50)
    >>> bc.on_task_end(agent, 0)
    >>> bc.memory["old_mean"].shape, abs(bc.loss(agent, None).item()) < 1e-6  # unchanged policy: KL 0
    (torch.Size([50, 1, 2]), True)
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agents.protection.base import Protection
from agents.protection.common import (
    Rows,
    actor_inputs,
    cat_rows,
    check_quantity,
    is_last_task,
    memory_rows,
    policy_mean,
    rows_count,
    run_actor,
    sample_rows,
    sample_task_rows,
)
from agents.replay import SequenceReplay, TransitionReplay

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent
    from agents.replay import Batch

MODES = ("reservoir", "bc")
DEFAULT_BATCH = {"reservoir": 512, "bc": 128}  # CW perfect memory; ClonEx
KL_STD_EPS = 1e-6  # the episodic code's std stabiliser (tanh_mean form)


def gaussian_kl(old_mean: Tensor, old_log_std: Tensor, mean: Tensor, log_std: Tensor, eps: float = 0.0) -> Tensor:
    """``KL(N(old) || N(new))`` of diagonal Gaussians, summed over the last axis.

    ``eps`` is added to both stds in the variance terms (not in the log term), as the
    ClonEx episodic code does; ``eps=0`` is the exact KL.

    Example:
        >>> zero = torch.zeros(1, 2)
        >>> gaussian_kl(zero, zero, zero, zero).item(), gaussian_kl(zero, zero, zero + 1.0, zero).item()
        (0.0, 1.0)
    """
    std = log_std.exp() + eps
    ratio = ((old_log_std.exp() + eps) / std).square()  # exactly 1 for an unchanged policy
    return ((log_std - old_log_std) + 0.5 * (ratio - 1.0) + 0.5 * ((old_mean - mean) / std).square()).sum(-1)


class Replay(Protection):
    """Perfect-memory replay (``"reservoir"``) or behavioural cloning of old policies (``"bc"``).

    Args:
        mode: ``"reservoir"`` or ``"bc"``.
        batch_size: reservoir: the SAC batch (CW: 512); bc: stored rows per cloning
            batch (ClonEx: 128). None: these defaults.
        capacity: reservoir: steps the replay holds (None: the whole run's steps,
            ``num_tasks x steps_per_task`` of the env; the agent's ``replay_size`` if the
            env does not tell).
        memory_per_task: bc: states stored per finished task (ClonEx: 10,000).
        coefficient: bc: weight of the KL (ClonEx: 100).
        quantity: bc: ``"tanh_mean"`` (the episodic code's KL on ``tanh(mu)``, default) or
            ``"pre_tanh_mean"`` (the exact KL of the policies).

    State (in ``state_dict``): the settings, ``configured`` (reservoir), ``memory``
    (bc: actor inputs, old means and log stds of all stored rows) and ``memory_tasks``.
    """

    name = "replay"

    def __init__(self, mode: str = "reservoir", batch_size: int | None = None, capacity: int | None = None,
                 memory_per_task: int = 10_000, coefficient: float = 100.0, quantity: str = "tanh_mean") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown replay mode {mode!r}; allowed: {', '.join(MODES)}")
        batch_size = DEFAULT_BATCH[mode] if batch_size is None else int(batch_size)
        if batch_size <= 0 or memory_per_task <= 0 or (capacity is not None and capacity <= 0) or coefficient < 0:
            raise ValueError(f"batch_size, memory_per_task and capacity must be positive and coefficient >= 0, got "
                             f"{batch_size}, {memory_per_task}, {capacity}, {coefficient}")
        self.mode, self.batch_size, self.capacity = mode, batch_size, capacity
        self.memory_per_task, self.coefficient = int(memory_per_task), float(coefficient)
        self.quantity = check_quantity(quantity)
        self.configured = False
        self.memory: Rows = {}
        self.memory_tasks: list[int] = []

    # ------------------------------------------------------------------ perfect memory
    def trainable_parameters(self, agent: "Agent") -> list[Tensor]:
        """No extra tensors; used as the earliest hook that sees the agent.

        The agent calls it whenever it makes an optimizer: in its constructor (before it
        stores anything) and on resume before it restores its replay. That is where the
        perfect-memory replay must be in place (a dedicated set-up hook would say so
        more plainly).
        """
        if self.mode == "reservoir" and agent.env is not None:
            self._configure_perfect_memory(agent)
        return []

    def on_task_start(self, agent: "Agent", task: int) -> None:
        if self.mode == "reservoir":
            self._configure_perfect_memory(agent)

    def _configure_perfect_memory(self, agent: "Agent") -> None:
        config = agent.config
        total = getattr(getattr(agent.env, "unwrapped", None), "total_steps", None)
        capacity = self.capacity or total or config.replay_size
        mode = "fifo" if agent.recurrent else "reservoir"
        replay = agent.replay
        matches = replay.capacity == capacity and replay.mode == mode
        if not matches and len(replay) > 0:
            raise RuntimeError("perfect-memory replay must be set up before the agent stores its first step "
                               "(attach the protection when the agent is made)")
        if not matches:
            if agent.recurrent:
                agent.replay = SequenceReplay(capacity, replay.obs_dim, replay.action_dim, config.seq_len,
                                              config.burn_in)
            else:
                agent.replay = TransitionReplay(capacity, replay.obs_dim, replay.action_dim, mode)
            agent.replay.rng = replay.rng  # keep the agent's seeded stream
            if total is not None and capacity < total:
                dropped = "the oldest are dropped (FIFO)" if agent.recurrent else "a uniform sample is kept"
                warnings.warn(f"perfect-memory replay holds {capacity} of the run's {total} steps: {dropped}",
                              stacklevel=2)
        # What the agent saves is what it does: a resumed agent rebuilds this replay.
        config.replay_size, config.replay_mode = int(capacity), mode
        config.reset_replay_on_task_change = False
        config.batch_size = self.batch_size
        self.configured = True

    def load_state_dict(self, state: dict) -> None:
        if self.configured and state["mode"] != "reservoir":
            raise RuntimeError("this Replay set the agent up for perfect memory, but the state is of mode "
                               f"{state['mode']!r}: build the agent with Replay(mode={state['mode']!r})")
        super().load_state_dict(state)

    # ------------------------------------------------------------------ behavioural cloning
    def on_task_end(self, agent: "Agent", task: int) -> None:
        if self.mode != "bc" or is_last_task(agent, task):
            return
        rows = sample_task_rows(agent, task, memory_rows(agent, self.memory_per_task))
        inputs = actor_inputs(agent, rows)
        with torch.no_grad():
            mean, log_std = run_actor(agent.actor, inputs, agent.actor_params(task))
        stored = {**{name: value.detach().clone() for name, value in inputs.items()},
                  "old_mean": mean, "old_log_std": log_std}
        self.memory = cat_rows(self.memory, stored)
        self.memory_tasks.append(int(task))

    def cloning_loss(self, agent: "Agent", rows: Rows) -> Tensor:
        """``coefficient x`` the mean over stored loss steps of ``KL(old || new)``."""
        mean, log_std = run_actor(agent.actor, rows, agent.actor_params(agent.current_task))
        quantity = self.quantity
        eps = KL_STD_EPS if quantity == "tanh_mean" else 0.0
        # old_mean is stored pre-tanh; both means go through the same map
        kl = gaussian_kl(policy_mean(rows["old_mean"], quantity), rows["old_log_std"],
                         policy_mean(mean, quantity), log_std, eps)
        mask = rows["mask"]
        return self.coefficient * (kl * mask).sum() / mask.sum().clamp(min=1.0)

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        if self.mode != "bc" or rows_count(self.memory) == 0:
            return None
        return self.cloning_loss(agent, sample_rows(self.memory, self.batch_size, agent.generator))

    def after_backward(self, agent: "Agent") -> None:
        if self.mode != "bc" or rows_count(self.memory) == 0:
            return
        for p in agent.actor.parameters():  # (g_sac + g_bc) / 2, as ClonEx merges them
            if p.grad is not None:
                p.grad.mul_(0.5)
