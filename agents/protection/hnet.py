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
  adds ``beta / T * sum_{t < T} || f_h(e_t, theta*) - f_h(e_t, theta) ||^2`` (squared
  error summed over all ``N`` outputs, as in the papers' code), so the weights of old
  tasks stay where they were while ``theta`` keeps learning.
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
  initialisation, Chang et al. ICLR 2020). The regulariser acts on the raw outputs.

Choices where the papers leave room (documented defaults): task embedding 32 (the papers
use 16-96), chunk embedding 32, hidden layers (64, 64) with ReLU, and the chunk size
picked as the largest whose hypernetwork (MLP + chunk and task embeddings) stays within
``target_ratio`` (0.95, as in Ehret et al.'s RNN experiments) of the generated weights.
``beta`` 0.05 (papers: 0.01-10): the penalty sums over all ``N`` outputs, so its pull
grows with the actor; 0.05 sits at the low end for a CW-sized actor (``N`` about 2e5).
Measured on the tiny actors of the tests (``N`` of 500-1,200, 100 updates of a second
task): 0.05 cuts the drift of the old task's outputs 3-10x against ``beta = 0``, 5.0
cuts it 35-100x (and slows the new task). Not used: von Oswald et al.'s look-ahead
variant of the regulariser and its random subset of old tasks per step.

Example:
    The compression ratio for Continual World's MLP actor and a GRU actor of the same
    widths (CW10: 39-dim observations, 4-dim actions, 10 tasks):

    >>> from agents.sac import SAC, SACConfig, SpaceSpec
    >>> cw10 = SpaceSpec(obs_dim=49, task_width=39, num_tasks=10, action_dim=4, onehot=True)
    >>> for trunk in ("mlp", "gru"):
    ...     hnet = SAC(spec=cw10, config=SACConfig(trunk=trunk), protection=HyperNetwork(), seed=0).protection
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
    from agents.sac import SAC

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
        beta: strength of the output regulariser (0: none, plain fine-tuning of ``theta``).
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
        generate_critic: also generate the critics' weights (needs agent support, see
            :meth:`critic_parameters`).
    """

    name = "hnet"

    def __init__(self, beta: float = 0.05, embedding_dim: int = 32, chunk_embedding_dim: int = 32,
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

    @property
    def beta(self) -> float:
        return self.config["beta"]

    # ------------------------------------------------------------------ building
    def _build(self, agent: "SAC") -> None:
        """Make the hypernetwork for this agent's actor (once; seeded by the agent's seed)."""
        if self.net is not None:
            return
        if self.config["generate_critic"] and not hasattr(agent, "critic_params"):
            raise NotImplementedError(
                "hnet(generate_critic=True) needs the agent to run its critics on weights from the protection: "
                "SAC.compute_loss must call q.encode/q.values with params=sub_params(protection.critic_parameters("
                "agent, task), 'q1'/'q2'), and the polyak update must move target_critic toward those generated "
                "weights (detached) instead of critic.parameters(). agents/sac.py has no such path yet "
                "(no SAC.critic_params).")
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

    def task_parameters(self, agent: "SAC", task: int) -> dict[str, Tensor]:
        """The actor's weights for ``task``: ``f_h(e_task, theta)`` (only the current task's
        embedding is trained through them)."""
        self._build(agent)
        generated = self.generate(task, trainable=task == agent.current_task)
        return {name: value for name, value in generated.items() if not name.startswith("critic.")}

    def critic_parameters(self, agent: "SAC", task: int) -> dict[str, Tensor]:
        """The critics' weights for ``task`` (``generate_critic=True``), named like
        ``agent.critic.named_parameters()``, for ``agent.critic(..., params=...)``."""
        self._build(agent)
        if not self.config["generate_critic"]:
            raise ValueError("this hypernetwork does not generate the critic (generate_critic=False)")
        generated = self.generate(task, trainable=task == agent.current_task)
        return {name[len("critic."):]: value for name, value in generated.items() if name.startswith("critic.")}

    # ------------------------------------------------------------------ hooks
    def trainable_parameters(self, agent: "SAC") -> list[Tensor]:
        self._build(agent)
        return list(self.net.parameters())  # unused embeddings get no gradient, so Adam skips them

    def on_task_start(self, agent: "SAC", task: int) -> None:
        """Snapshot ``theta*`` for the regulariser; start the new embedding."""
        self._build(agent)
        if task == 0:
            return
        with torch.no_grad():
            if self.config["embedding_init"] == "previous":
                self.net.task_embeddings[task].copy_(self.net.task_embeddings[task - 1])
            self.snapshot = {name: p.detach().clone() for name, p in self.net.named_parameters()
                             if not name.startswith("task_embeddings.")}
        self.snapshot_task, self._snapshot_outputs = task, None

    def snapshot_outputs(self) -> Tensor:
        """``f_h(e_t, theta*)`` for every task before the snapshot, ``[snapshot_task, N]``."""
        if self._snapshot_outputs is None:
            with torch.no_grad():
                self._snapshot_outputs = torch.func.functional_call(self.net, self.snapshot, (self._old_embeddings(),))
        return self._snapshot_outputs

    def _old_embeddings(self) -> Tensor:
        return torch.stack([self.net.task_embeddings[t].detach() for t in range(self.snapshot_task)])

    def loss(self, agent: "SAC", batch: Any) -> Tensor | None:
        """``beta / T * sum_{t < T} ||f_h(e_t, theta*) - f_h(e_t, theta)||^2``."""
        if self.beta == 0 or self.snapshot is None or self.snapshot_task == 0:
            return None
        drift = self.net(self._old_embeddings()) - self.snapshot_outputs()
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
        self.snapshot_task, self._snapshot_outputs = int(state["snapshot_task"]), None
