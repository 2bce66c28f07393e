"""PackNet: give every task its own share of the actor's weights by pruning, then freeze it.

Mallya & Lazebnik, "PackNet: Adding Multiple Tasks to a Single Network by Iterative
Pruning" (CVPR 2018), with the rules of Continual World (Wolczyk et al., NeurIPS 2021,
``continualworld/methods/packnet.py``; CW20 settings in ``reference/README.md``):

- every actor weight matrix has an *owner* per entry, recurrent kernels included (the
  GRU/LSTM ``cell.weight_ih`` and ``cell.weight_hh``); at first task 0 owns everything;
- after each task ``t`` but the last, the fraction ``left / (left + 1)`` (``left`` = tasks
  still to come) of the weights ``t`` owns with the smallest magnitude is pruned: set to
  zero and handed to task ``t + 1``; the task is then retrained for ``retrain_steps``
  updates on its own replay (CW: 100,000) so that it copes without them; this leaves each
  task ``1 / num_tasks`` of every matrix;
- while task ``t`` trains (retraining included) only the entries it owns move;
  biases and LayerNorm move during task 0 only; multi-head output heads are not pruned
  (each task's rows are its own); with a single head, the head is managed like the trunk;
- CW ran PackNet with ``--clipnorm=2e-05``, a clip of the global gradient norm of the actor,
  of the critics and of the entropy coefficient at *every* update (the flag is global in CW,
  not only for retraining); ``clip_norm`` does the same (None: off);
- acting or evaluating on task ``i`` uses only the weights owned by tasks ``<= i``
  (:meth:`PackNet.task_parameters`), so later tasks' weights never reach an old task.

Freezing is exact (old weights stay bitwise equal), not approximate: in ``after_backward``
the gradient of every frozen entry is zeroed *and* so is Adam's first moment of that entry.
Adam's step is ``lr * m / (sqrt(v) + eps)``; a zero gradient alone does not stop a weight
whose ``m`` still holds momentum from the time it was trainable (a just-pruned weight during
retraining, or any weight when the agent keeps its optimizer across tasks), but with
``m = 0`` the step is exactly zero. CW instead resets the optimizer around retraining; we do
that too (``agent.reset_optimizer()``: by default CW's reset, which zeroes Adam's moments
and keeps its step count; a fresh Adam under ``optimizer_reset="fresh"``), so both the CW
schedule and the guarantee hold whatever the agent's optimizer policy.

Ties at the pruning threshold (documented, not copied): CW sorts a task's magnitudes, takes
the one at index ``floor(n * fraction)`` as the threshold and prunes every owned entry with
``|w| <= threshold``, i.e. ``floor(n * fraction) + 1`` entries plus any further ties; we
prune exactly ``round(n * fraction)`` entries (the smallest, ties broken by position), so
that every task keeps exactly ``1 / num_tasks`` of each matrix. The two differ by one entry
per matrix (of 65,536 in a CW layer) and, for ties, only where magnitudes are exactly
equal, which trained float weights practically never are.

Example:
    >>> import gymnasium as gym, contenv
    >>> from agents.sac import SAC, SACConfig
    >>> env = gym.make("contenv/Sequence-v0", tasks=["repeat-first(d=2)", "copy(p=1,i=1)"], steps_per_task=40)
    >>> config = SACConfig(trunk="gru", hidden_sizes=(8,), rnn_size=4, batch_size=4, seq_len=4,
    ...                    random_steps=10, update_after=20, update_every=20, gradient_steps=2)
    >>> agent = SAC(env, config, protection=PackNet(retrain_steps=2), seed=0)
    >>> _ = agent.learn(40)  # task 0, then half of its weights pruned, retrain
    >>> packnet = agent.protection
    >>> packnet.owner["cell.weight_hh"].shape, packnet.owned_fraction(0), packnet.owned_fraction(1)
    (torch.Size([12, 4]), 0.5, 0.5)
    >>> old = agent.actor.cell.weight_hh.detach().clone()
    >>> _ = agent.learn(40)  # task 1 trains only the pruned half
    >>> owned_by_0 = packnet.owner["cell.weight_hh"] == 0
    >>> bool(torch.equal(agent.actor.cell.weight_hh[owned_by_0], old[owned_by_0]))
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from agents.protection.base import Protection

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent

HEADS = ("mean.", "log_std.")


class PackNet(Protection):
    """PackNet over the actor (see the module docstring).

    Args:
        retrain_steps: updates on the finished task's replay after pruning it (CW: 100,000,
            a tenth of a task's 1M steps; scale it with the budget).
        clip_norm: clip the global gradient norms of actor, critics and entropy
            coefficient at every update (CW: 2e-5); None leaves gradients unclipped.

    Attributes:
        owner: ``{name: int tensor}`` the owning task of every entry of each managed matrix.
        biases_frozen: biases and LayerNorm no longer train (true after task 0).
        max_owner: the latest task that owns any weight (-1 before the first task).
    """

    name = "packnet"

    def __init__(self, retrain_steps: int = 100_000, clip_norm: float | None = 2e-5) -> None:
        if retrain_steps < 0:
            raise ValueError(f"retrain_steps must be >= 0, got {retrain_steps}")
        if clip_norm is not None and clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive or None, got {clip_norm}")
        self.retrain_steps = int(retrain_steps)
        self.clip_norm = clip_norm
        self.owner: dict[str, Tensor] | None = None
        self.biases_frozen = False
        self.max_owner = -1
        self._trainable: tuple[int, dict[str, Tensor | bool]] | None = None  # cache of (task, masks)

    # ------------------------------------------------------------------ which weight is what
    @staticmethod
    def managed(agent: "Agent") -> list[str]:
        """Names of the actor matrices that get owners: every 2-D weight, heads only when single."""
        return [name for name, p in agent.actor.named_parameters()
                if p.dim() == 2 and (agent.num_heads == 1 or not name.startswith(HEADS))]

    def _setup(self, agent: "Agent") -> None:
        if self.owner is None:
            self.owner = {name: torch.zeros_like(p, dtype=torch.long)
                          for name, p in agent.actor.named_parameters() if name in self.managed(agent)}
            self._update_max_owner()

    def _update_max_owner(self) -> None:
        # The latest task that owns any weight; cached since every actor call reads it.
        self.max_owner = -1 if self.owner is None else max(int(o.max()) for o in self.owner.values())

    def owned_fraction(self, task: int) -> float:
        """Share of all managed entries that ``task`` owns."""
        owned = sum(int((o == task).sum()) for o in self.owner.values())
        return owned / sum(o.numel() for o in self.owner.values())

    def trainable_masks(self, agent: "Agent", task: int) -> dict[str, Tensor | bool]:
        """Per actor parameter: True (all of it trains), False (frozen) or a bool mask."""
        if self._trainable is not None and self._trainable[0] == task:
            return self._trainable[1]
        masks: dict[str, Tensor | bool] = {}
        action_dim = agent.spec.action_dim
        for name, p in agent.actor.named_parameters():
            if name in self.owner:
                masks[name] = self.owner[name] == task
            elif name.startswith(HEADS):  # multi-head: the rows of this task's head only
                rows = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
                rows[task * action_dim : (task + 1) * action_dim] = True
                masks[name] = rows.view(-1, *([1] * (p.dim() - 1))).expand_as(p)
            else:  # biases and LayerNorm
                masks[name] = not self.biases_frozen
        self._trainable = (task, masks)
        return masks

    # ------------------------------------------------------------------ hooks
    def on_task_start(self, agent: "Agent", task: int) -> None:
        self._setup(agent)
        self._trainable = None

    def after_backward(self, agent: "Agent") -> None:
        """Zero gradients and Adam momentum of everything the current task may not move; clip."""
        self._setup(agent)
        masks = self.trainable_masks(agent, agent.current_task)
        for name, p in agent.actor.named_parameters():
            keep = masks[name]
            if keep is True:
                continue
            frozen = ~keep if isinstance(keep, Tensor) else torch.ones_like(p, dtype=torch.bool)
            if p.grad is not None:
                p.grad.masked_fill_(frozen, 0.0)
            momentum = agent.optimizer.state.get(p, {}).get("exp_avg")
            if momentum is not None:
                momentum.masked_fill_(frozen, 0.0)
        if self.clip_norm is not None:  # CW clips actor, critics and alpha separately
            torch.nn.utils.clip_grad_norm_(agent.actor.parameters(), self.clip_norm)
            torch.nn.utils.clip_grad_norm_(agent.critic.parameters(), self.clip_norm)
            torch.nn.utils.clip_grad_norm_([agent.log_alpha], self.clip_norm)

    def on_task_end(self, agent: "Agent", task: int) -> None:
        """Prune ``task``'s share to what it may keep, retrain it, and freeze it."""
        self._setup(agent)
        tasks_left = agent.num_tasks - task - 1
        if tasks_left <= 0:
            return  # the last task keeps everything it owns
        self.biases_frozen = True  # from the end of task 0 on (CW freezes them before retraining)
        self.prune(agent, task, tasks_left / (tasks_left + 1))
        agent.reset_optimizer()  # CW resets Adam (moments; step count kept) before and after retraining
        if len(agent.replay) > 0:
            for _ in range(self.retrain_steps):
                agent.gradient_step()
        agent.reset_optimizer()

    @torch.no_grad()
    def prune(self, agent: "Agent", task: int, fraction: float) -> None:
        """Zero the ``fraction`` of ``task``'s entries of each matrix with the smallest
        magnitude and hand them to ``task + 1`` (per matrix, as CW)."""
        params = dict(agent.actor.named_parameters())
        for name, owner in self.owner.items():
            weight = params[name]
            owned = (owner == task).nonzero(as_tuple=True)
            count = int(round(owned[0].numel() * fraction))
            if count == 0:
                continue
            smallest = weight[owned].abs().argsort(stable=True)[:count]
            pruned = tuple(index[smallest] for index in owned)
            weight[pruned] = 0.0
            owner[pruned] = task + 1
        self._trainable = None
        self._update_max_owner()

    def task_parameters(self, agent: "Agent", task: int) -> dict[str, Tensor] | None:
        """The managed matrices with entries of tasks after ``task`` zeroed (None when no
        later task owns anything: then the actor's own weights are exactly that view)."""
        if self.owner is None or task >= self.max_owner:
            return None
        params = dict(agent.actor.named_parameters())
        return {name: torch.where(owner <= task, params[name], 0.0) for name, owner in self.owner.items()}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"retrain_steps": self.retrain_steps, "clip_norm": self.clip_norm, "biases_frozen": self.biases_frozen,
                "owner": None if self.owner is None else {k: v.clone() for k, v in self.owner.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.retrain_steps, self.clip_norm = int(state["retrain_steps"]), state["clip_norm"]
        self.biases_frozen = bool(state["biases_frozen"])
        self.owner = None if state["owner"] is None else {k: v.clone() for k, v in state["owner"].items()}
        self._trainable = None
        self._update_max_owner()
