"""Hypernetwork protection: a chunked hypernetwork writes every actor weight from a task embedding.

von Oswald, Henning, Grewe & Sacramento, "Continual learning with hypernetworks" (ICLR 2020);
Ehret, Henning, Cervera, Meulemans, von Oswald & Grewe, "Continual learning in recurrent
neural networks" (ICLR 2021), which applies it to GRU/LSTM weights.

- **Generation.** The actor's weights (every matrix, bias and LayerNorm gain, the GRU/LSTM
  ``cell.weight_ih``/``weight_hh`` included) are one flat vector of ``N`` values cut into
  chunks of ``C``. An MLP ``f_h`` reads ``[e_t, c_j]`` (the task's embedding, the chunk's
  embedding) and writes chunk ``j``. Chunk embeddings are shared by all tasks and trained
  with the MLP (together: ``theta``); chunking is what lets ``f_h`` be smaller than the
  actor. The actor module's own weights are never used: every call of the actor for task
  ``t`` reads ``f_h(e_t, theta)`` (:meth:`HyperNetwork.task_parameters`).
- **Regulariser.** At the start of task ``T`` a snapshot ``theta*`` is taken; every update
  adds ``beta / T * sum_{t < T} || W(e_t, theta*) - W(e_t, theta) ||^2``, the squared
  distance between the *generated weights* ``W`` (``base + scale * f_h``, one head) that
  the snapshot and the current hypernetwork give old task ``t``, summed over all ``N``
  weights and averaged over the ``T`` old tasks, with ``beta`` outside: hypnettorch's
  ``calc_fix_target_reg`` (``utils/hnet_regularizer.py``: sum over tasks of
  ``(W_target - W_predicted)^2.sum()``, divided by the number of tasks; the caller adds
  ``beta * reg``), which is von Oswald et al.'s Eq. 2 and Ehret et al.'s regulariser. So
  ``beta`` means what it means in those papers. With ``generate_critic=True`` the
  critics' generated weights are in ``W`` too.
- **Embeddings.** One per task (separate tensors, so only the current one ever gets a
  gradient: old ones are frozen bit for bit). A new task's embedding starts as a copy of
  the previous one (``embedding_init="previous"``), so a task starts from the previous
  task's policy like Continual World's kept actor; ``"random"`` starts it afresh.
- **Heads.** The hypernetwork writes one output head; the task embedding makes it the
  task's own, and it is copied into every head slot of a multi-head actor.
- **Scale.** Generated tensor = ``base + scale * output``, with two fixed numbers per
  tensor read off the actor's initialisation (its mean and std: Glorot or orthogonal
  matrices; biases and LayerNorm gains, constant at init, get their constant and
  ``constant_scale``). With the output layer calibrated to unit variance, a fresh
  hypernetwork starts the actor at Keras-like initial weights (the role of "hyperfan"
  initialisation, Chang et al. ICLR 2020). The regulariser acts on the generated weights,
  i.e. on the raw outputs weighted by ``scale^2``.
- **Critics** (``generate_critic=True``). The hypernetwork writes the twin critics' weights
  too (their own heads the same way), and the agent's SAC losses use them
  (:meth:`critic_parameters`, the ``critic_parameters`` hook of
  :mod:`agents.protection.base`); the target critics follow the generated weights of the
  current task by Polyak averaging; the critic modules' own weights are then unused. Off by
  default: CW keeps one critic for all tasks, and the papers generate only the network they
  protect.

Choices where the papers leave room (documented defaults): task embedding 32 (the papers
use 16-96), chunk embedding 32, hidden layers (64, 64) with ReLU, and the chunk size
picked as the largest whose hypernetwork (MLP + chunk and task embeddings) stays within
``target_ratio`` (0.95, as in Ehret et al.'s RNN experiments) of the generated weights.
``beta`` 1.0: hypnettorch's default is 0.01 (``cli_args.cl_args(dbeta=0.01)``) and the
papers tune it per benchmark; measured on the tests' tiny actors (100 updates of a second
task, relative drift of the first task's generated weights; MLP / GRU): beta 0 lets them
drift 0.31 / 0.42, 0.01 0.29 / 0.30, 0.1 0.14 / 0.12, 1 0.056 / 0.043, 10 0.019 / 0.011,
100 0.0047 / 0.0045. 0.01 barely protects an RL actor over so few updates, so the default
is 1.0; tune it like the papers did. Not used: von Oswald et al.'s
look-ahead variant of the regulariser and its random subset of old tasks per step.

Example:
    The compression ratio for Continual World's MLP actor and a GRU actor of the same
    widths (GRU 256, 4 x 256; CW10: 39-dim observations, 4-dim actions, 10 tasks):

    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> cw10 = SpaceSpec(obs_dim=49, task_width=39, num_tasks=10, action_dim=4, onehot=True)
    >>> for trunk in ("mlp", "gru"):
    ...     config = SACConfig(trunk=trunk, hidden_sizes=(256,) * 4, rnn_size=256)
    ...     hnet = SAC(spec=cw10, config=config, protection=HyperNetwork(), seed=0).protection
    ...     print(trunk, hnet.target_size, hnet.chunk_size, hnet.num_chunks, hnet.hypernetwork_size,
    ...           round(hnet.compression_ratio, 4))
    mlp 210184 2903 73 199671 0.95
    gru 507656 7251 71 482227 0.9499
    >>> agent = SAC(spec=cw10, config=SACConfig(trunk="gru", hidden_sizes=(8,), rnn_size=4),
    ...             protection=HyperNetwork(embedding_dim=16), seed=0)
    >>> weights = agent.protection.task_parameters(agent, 3)  # every actor weight, from e_3
    >>> sorted(weights) == sorted(name for name, _ in agent.actor.named_parameters())
    True
    >>> weights["cell.weight_hh"].shape, weights["mean.weight"].shape  # 10 heads: one written, copied
    (torch.Size([12, 4]), torch.Size([40, 8]))
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from agents.protection.base import Protection

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent

HEADS = ("mean.", "log_std.", "head.", "q1.head.", "q2.head.")
EMBEDDING_INITS = ("previous", "random")


class ChunkedHypernetwork(nn.Module):
    """``f_h``: ``[k, embedding_dim]`` task embeddings -> ``[k, target_size]`` raw weights.

    Holds the task embeddings too (``task_embeddings.<t>``); :meth:`forward` takes the
    embeddings explicitly so that a snapshot of the other parameters can be run on them.
    """

    def __init__(self, target_size: int, num_tasks: int, embedding_dim: int, chunk_embedding_dim: int,
                 hidden_sizes: tuple[int, ...], chunk_size: int) -> None:
        super().__init__()
        self.target_size, self.chunk_size = target_size, chunk_size
        self.num_chunks = math.ceil(target_size / chunk_size)
        self.task_embeddings = nn.ParameterList(nn.Parameter(torch.randn(embedding_dim)) for _ in range(num_tasks))
        self.chunk_embeddings = nn.Parameter(torch.randn(self.num_chunks, chunk_embedding_dim))
        sizes = (embedding_dim + chunk_embedding_dim, *hidden_sizes)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = nn.Linear(sizes[-1], chunk_size)
        nn.init.zeros_(self.output.bias)

    def forward(self, embeddings: Tensor) -> Tensor:
        k = embeddings.shape[0]
        x = torch.cat([embeddings[:, None, :].expand(k, self.num_chunks, -1),
                       self.chunk_embeddings[None].expand(k, -1, -1)], dim=-1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.output(x).flatten(1)[:, : self.target_size]


def hypernetwork_size(target_size: int, chunk_size: np.ndarray | int, num_tasks: int, embedding_dim: int,
                      chunk_embedding_dim: int, hidden_sizes: tuple[int, ...]) -> np.ndarray | int:
    """Trainable numbers of a :class:`ChunkedHypernetwork` (MLP, chunk and task embeddings).

    Example:
        >>> net = ChunkedHypernetwork(1000, 3, 8, 4, (16,), 100)
        >>> sum(p.numel() for p in net.parameters()) == hypernetwork_size(1000, 100, 3, 8, 4, (16,))
        True
    """
    sizes = (embedding_dim + chunk_embedding_dim, *hidden_sizes)
    mlp = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    num_chunks = -(-target_size // np.asarray(chunk_size))
    total = mlp + (sizes[-1] + 1) * np.asarray(chunk_size) + num_chunks * chunk_embedding_dim + num_tasks * embedding_dim
    return int(total) if np.ndim(total) == 0 else total


class HyperNetwork(Protection):
    """Hypernetwork protection (see the module docstring).

    Args:
        beta: strength of the regulariser on old tasks' generated weights (0: none, plain
            fine-tuning of ``theta``); the papers' ``beta``.
        embedding_dim: task embedding width.
        chunk_embedding_dim: chunk embedding width.
        hidden_sizes: hidden layers of the hypernetwork MLP.
        chunk_size: values written per chunk; None picks the largest chunk whose
            hypernetwork stays within ``target_ratio`` of the generated weights (the
            smallest hypernetwork when none does, as for tiny actors).
        target_ratio: compression ratio aimed at when ``chunk_size`` is None.
        embedding_init: ``"previous"`` (a new task starts from the previous embedding) or ``"random"``.
        constant_scale: output scale of tensors that are constant at initialisation
            (biases, LayerNorm gains).
        generate_critic: also generate the critics' weights, one critic per task (see
            :meth:`critic_parameters`).
    """

    name = "hnet"

    def __init__(self, beta: float = 1.0, embedding_dim: int = 32, chunk_embedding_dim: int = 32,
                 hidden_sizes: tuple[int, ...] = (64, 64), chunk_size: int | None = None, target_ratio: float = 0.95,
                 embedding_init: str = "previous", constant_scale: float = 0.1, generate_critic: bool = False) -> None:
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if embedding_init not in EMBEDDING_INITS:
            raise ValueError(f"embedding_init must be one of {EMBEDDING_INITS}, got {embedding_init!r}")
        if min(embedding_dim, chunk_embedding_dim, *hidden_sizes, chunk_size or 1) <= 0 or target_ratio <= 0:
            raise ValueError("hypernetwork sizes and target_ratio must be positive")
        self.config = dict(beta=float(beta), embedding_dim=int(embedding_dim), chunk_embedding_dim=int(chunk_embedding_dim),
                           hidden_sizes=tuple(int(h) for h in hidden_sizes), chunk_size=chunk_size,
                           target_ratio=float(target_ratio), embedding_init=embedding_init,
                           constant_scale=float(constant_scale), generate_critic=bool(generate_critic))
        self.net: ChunkedHypernetwork | None = None
        self.targets: list[tuple[str, tuple[int, ...], float, float, bool]] = []  # (name, shape, base, scale, head)
        self.num_heads = 1
        self.snapshot: dict[str, Tensor] | None = None  # theta* of the current task's start
        self.snapshot_task = 0  # the snapshot serves tasks 0 .. snapshot_task - 1
        self._snapshot_outputs: Tensor | None = None  # f_h(e_t, theta*) for those tasks (derived)
        self._scales: Tensor | None = None  # per generated weight, its scale (derived from targets)

    @property
    def beta(self) -> float:
        return self.config["beta"]

    # ------------------------------------------------------------------ building
    def _build(self, agent: "Agent") -> None:
        """Make the hypernetwork for this agent's actor (once; seeded by the agent's seed)."""
        if self.net is not None:
            return
        if self.config["generate_critic"] and not hasattr(agent, "critic_params"):
            raise NotImplementedError("hnet(generate_critic=True) needs an agent that runs its critics on weights "
                                      "from the protection (SAC.critic_params)")
        self.num_heads = agent.num_heads
        modules = [("", agent.actor)] + ([("critic.", agent.critic)] if self.config["generate_critic"] else [])
        targets = []
        for prefix, module in modules:
            for name, p in module.named_parameters():
                p = p.detach()
                head = name.startswith(HEADS) and self.num_heads > 1
                if head:
                    p = p[: p.shape[0] // self.num_heads]  # one head; the embedding makes it the task's
                std = float(p.std(unbiased=False)) if p.numel() > 1 else 0.0
                scale = std if std > 1e-8 else self.config["constant_scale"]
                targets.append((prefix + name, tuple(p.shape), float(p.mean()), scale, head))
        self.targets = targets
        self._make_net(agent.num_tasks, agent.device, agent.seed)

    def _make_net(self, num_tasks: int, device: torch.device | str, seed: int) -> None:
        c = self.config
        size = sum(math.prod(target[1]) for target in self.targets)
        chunk = c["chunk_size"] or self._auto_chunk_size(size, num_tasks)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ChunkedHypernetwork(size, num_tasks, c["embedding_dim"], c["chunk_embedding_dim"],
                                      c["hidden_sizes"], chunk)
            with torch.no_grad():  # unit-variance outputs: the actor starts at its usual scale
                net.output.weight.div_(net(net.task_embeddings[0][None]).std())
        self.net = net.to(device)

    def _auto_chunk_size(self, size: int, num_tasks: int) -> int:
        c = self.config
        chunks = np.arange(1, size + 1)
        sizes = hypernetwork_size(size, chunks, num_tasks, c["embedding_dim"], c["chunk_embedding_dim"], c["hidden_sizes"])
        fits = chunks[sizes <= c["target_ratio"] * size]
        return int(fits.max()) if len(fits) else int(chunks[sizes.argmin()])

    # ------------------------------------------------------------------ sizes
    @property
    def target_size(self) -> int:
        """Weights generated per task (the actor with one head; plus the critics if generated)."""
        return self.net.target_size

    @property
    def chunk_size(self) -> int:
        return self.net.chunk_size

    @property
    def num_chunks(self) -> int:
        return self.net.num_chunks

    @property
    def hypernetwork_size(self) -> int:
        """Trainable numbers of the hypernetwork: MLP, chunk embeddings, all task embeddings."""
        return sum(p.numel() for p in self.net.parameters())

    @property
    def compression_ratio(self) -> float:
        """``hypernetwork_size / target_size`` (below 1: the hypernetwork is the smaller)."""
        return self.hypernetwork_size / self.target_size

    # ------------------------------------------------------------------ generation
    def generate(self, task: int, trainable: bool = True) -> dict[str, Tensor]:
        """Every generated tensor for ``task``, by name (critic ones prefixed ``critic.``)."""
        embedding = self.net.task_embeddings[task]
        raw = self.net((embedding if trainable else embedding.detach())[None])[0]
        out, start = {}, 0
        for name, shape, base, scale, head in self.targets:
            n = math.prod(shape)
            value = raw[start : start + n].view(shape) * scale + base
            start += n
            if head:
                value = value.repeat(self.num_heads, *([1] * (len(shape) - 1)))
            out[name] = value
        return out

    def task_parameters(self, agent: "Agent", task: int) -> dict[str, Tensor]:
        """The actor's weights for ``task``: ``f_h(e_task, theta)`` (only the current task's
        embedding is trained through them)."""
        self._build(agent)
        generated = self.generate(task, trainable=task == agent.current_task)
        return {name: value for name, value in generated.items() if not name.startswith("critic.")}

    def critic_parameters(self, agent: "Agent", task: int) -> dict[str, Tensor] | None:
        """The critics' weights for ``task``, named like ``agent.critic.named_parameters()``
        (for ``agent.critic(..., params=...)``); None unless ``generate_critic=True``."""
        if not self.config["generate_critic"]:
            return None
        self._build(agent)
        generated = self.generate(task, trainable=task == agent.current_task)
        return {name[len("critic."):]: value for name, value in generated.items() if name.startswith("critic.")}

    # ------------------------------------------------------------------ hooks
    def trainable_parameters(self, agent: "Agent") -> list[Tensor]:
        self._build(agent)
        return list(self.net.parameters())  # unused embeddings get no gradient, so Adam skips them

    def on_task_start(self, agent: "Agent", task: int) -> None:
        """Snapshot ``theta*`` for the regulariser; start the new embedding; with generated
        critics, start the target critics at the task's generated critics (as SAC starts
        its target at its critic) unless the task continues the previous one's embedding."""
        self._build(agent)
        if task > 0:
            with torch.no_grad():
                if self.config["embedding_init"] == "previous":
                    self.net.task_embeddings[task].copy_(self.net.task_embeddings[task - 1])
                self.snapshot = {name: p.detach().clone() for name, p in self.net.named_parameters()
                                 if not name.startswith("task_embeddings.")}
            self.snapshot_task, self._snapshot_outputs = task, None
        if self.config["generate_critic"] and (task == 0 or self.config["embedding_init"] == "random"):
            with torch.no_grad():
                generated = self.critic_parameters(agent, task)
                for name, target in agent.target_critic.named_parameters():
                    target.copy_(generated[name])

    def snapshot_outputs(self) -> Tensor:
        """``f_h(e_t, theta*)`` for every task before the snapshot, ``[snapshot_task, N]``."""
        if self._snapshot_outputs is None:
            with torch.no_grad():
                self._snapshot_outputs = torch.func.functional_call(self.net, self.snapshot, (self._old_embeddings(),))
        return self._snapshot_outputs

    def _old_embeddings(self) -> Tensor:
        return torch.stack([self.net.task_embeddings[t].detach() for t in range(self.snapshot_task)])

    def weight_scales(self) -> Tensor:
        """``[N]``: the scale of every generated weight (``W = base + scale * raw``), so that
        ``W - W* = scale * (raw - raw*)``."""
        if self._scales is None or self._scales.device != self.net.output.weight.device:
            self._scales = torch.cat([torch.full((math.prod(shape),), scale) for _, shape, _, scale, _ in self.targets])
            self._scales = self._scales.to(self.net.output.weight.device)
        return self._scales

    def loss(self, agent: "Agent", batch: Any) -> Tensor | None:
        """``beta / T * sum_{t < T} ||W(e_t, theta*) - W(e_t, theta)||^2`` on the generated weights."""
        if self.beta == 0 or self.snapshot is None or self.snapshot_task == 0:
            return None
        drift = (self.net(self._old_embeddings()) - self.snapshot_outputs()) * self.weight_scales()
        return self.beta / self.snapshot_task * drift.square().sum()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        clone = lambda d: None if d is None else {k: v.detach().clone() for k, v in d.items()}  # noqa: E731
        return {"config": dict(self.config), "targets": list(self.targets), "num_heads": self.num_heads,
                "net": None if self.net is None else clone(self.net.state_dict()),
                "num_tasks": None if self.net is None else len(self.net.task_embeddings),
                "snapshot": clone(self.snapshot), "snapshot_task": self.snapshot_task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore in place when the architecture matches (the optimizer keeps its tensors);
        otherwise (e.g. ``SAC.load`` built us with default arguments) rebuild it first."""
        same = self.net is not None and state["config"] == self.config and list(map(tuple, state["targets"])) == self.targets
        self.config, self.num_heads = dict(state["config"]), state["num_heads"]
        self.targets = [tuple(target) for target in state["targets"]]
        if state["net"] is not None:
            if not same:
                device = next(iter(state["net"].values())).device
                self._make_net(state["num_tasks"], device, seed=0)
            self.net.load_state_dict(state["net"])
        self.snapshot = None if state["snapshot"] is None else {k: v.clone() for k, v in state["snapshot"].items()}
        self.snapshot_task, self._snapshot_outputs, self._scales = int(state["snapshot_task"]), None, None
