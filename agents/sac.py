"""Soft actor-critic with the Continual World rules, for MLP, GRU and LSTM trunks.

The agent speaks Stable-Baselines3's verbs (``learn``, ``predict``, ``save``, ``load``)
and the batched evaluator's ``act``. It trains on a :class:`~contenv.ContinualEnv` (or
any env with a 1-D ``Box`` observation and a ``Box(-1, 1)`` action) following Continual
World (Wolczyk et al., NeurIPS 2021; ``continualworld/sac/sac.py``):

- Adam, lr 1e-3, batch 128, gamma 0.99, polyak 0.995, FIFO replay of 1e6 steps;
- one learned entropy coefficient per task (``log_alpha[task]``, initialised to 1 as in
  CW), target entropy ``-|A|``;
- at each task start: the protection's ``on_task_start``, the replay emptied and Adam's
  moments zeroed while its step count is kept (CW's ``reset_optimizer`` skips the TF2
  optimizer's ``iterations``, so bias correction does not restart;
  ``optimizer_reset="fresh"`` makes a new Adam instead); then 10,000 uniform-random actions
  (a protection may act with an earlier task's policy instead: ``exploration_task``,
  ClonEx) and rounds of 50 updates after the steps whose 0-based index within the task is
  a multiple of 50 from 1,000 on (CW's ``current_task_timestep``: so no round on a task's
  last step);
- bootstrapping through time limits and task switches (only ``terminated`` stops it);
- Keras' LayerNorm epsilon 1e-3 and Adam epsilon 1e-7 (see :mod:`agents.nets.networks`);
- actor, critic and entropy losses from one batch, one backward pass and one optimizer
  step (the actor's ``Q`` uses detached critic weights, so its gradient reaches only the
  actor, as in CW's separate gradient tapes); the critics run on weights a protection
  supplies (the ``critic_parameters`` hook, e.g. generated ones) when it does, and the
  target critics then follow those.

Documented differences from CW's code: CW acts uniformly at random while its 0-based step
index is ``<= start_steps``, i.e. 10,001 steps per task, we take ``random_steps`` = 10,000
(one step of a million; ``random_steps=10_001`` reproduces it exactly); CW's single Keras Adam
is applied three times per update (actor, critics, entropy coefficients), so its step
count grows by 3 per update (see :func:`reset_adam`).

Recurrent agents store whole episodes in a :class:`~agents.replay.SequenceReplay` and
learn on sub-sequences; their recurrent state starts at zero at every episode start
(while acting, in replay windows, and in ``act``/``predict`` on ``episode_start`` rows).

Example:
    >>> import gymnasium as gym, contenv
    >>> env = gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=30, horizon=10)
    >>> config = SACConfig(hidden_sizes=(16, 16), batch_size=8, random_steps=5, update_after=10, update_every=5)
    >>> agent = SAC(env, config, seed=0)
    >>> _ = agent.learn(60)
    >>> agent.num_timesteps, agent.current_task, agent.log_alpha.shape
    (60, 1, torch.Size([2]))
    >>> obs, _ = env.reset(seed=1)
    >>> action, state = agent.predict(obs, deterministic=True)
    >>> action.shape
    (4,)
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from contenv.atomic import atomic_file
from agents.training.finite import check_finite_state, check_observations, check_transition, check_update, end_replay_episode
from agents.nets.networks import (CW_HIDDEN_SIZES, TRUNKS, Actor, NetworkConfig, TwinCritic, check_body, check_rnn_layers,
                             shared_input_features, squashed_sample, sub_params)
from agents.protection import HOOKS, Protection, defines, make_protection
from agents.replay import Batch, SequenceReplay, TransitionReplay, check_window

HEADS = ("auto", "multi", "single")
CW_BATCH = 128  # transitions per update (Continual World)
RECURRENT_BATCH = 2  # windows per update of a recurrent agent (see SACConfig)
RECURRENT_HIDDEN_SIZES = (256, 256)
MINGRU_LAYERS = 2  # stacked minGRU layers (see SACConfig.rnn_layers)
OPTIMIZER_RESETS = ("moments", "fresh")
SAVE_FORMAT = "contenv-sac-v1"


@dataclass
class SACConfig:
    """Every knob of the agent; the defaults are Continual World's (MLP agent).

    Recurrent agents (GRU, LSTM) replay whole episodes of up to ``seq_len`` steps (longer
    episodes in ``seq_len`` chunks whose recurrent state is recomputed from the episode's
    start); their defaults, chosen from ``scripts/bench_throughput.py --recurrent`` and
    ``scripts/bench_learning.py`` (see the README, "Recurrent agents"), differ where
    marked: ``None`` fields resolve by trunk.

    Attributes:
        trunk: ``"mlp"`` (CW), ``"gru"``, ``"lstm"`` or ``"mingru"`` (minGRU, Feng et al. 2024:
            linear in its state, so it runs over a window as a parallel scan).
        hidden_sizes: hidden layers of every body. None: 4 x 256 for the MLP (CW), 2 x 256
            for recurrent agents (the heads of Ni et al. 2022's recurrent SAC).
        rnn_size: width of the recurrent cells (Ni et al. 2022: 128).
        rnn_layers: stacked recurrent layers. None: 2 for ``mingru`` (one minGRU layer did not
            learn a cue among distractors, see :class:`agents.nets.scan_cell.MinGRUCell`), 1 for
            GRU and LSTM (the only value they allow).
        body: hidden layers of every head: ``"cw"`` (``Linear -> LayerNorm -> tanh``, then
            leaky ReLU; CW's) or ``"relu"`` (ReLU layers without normalisation, the plain
            network of the plasticity literature; see :class:`agents.nets.networks.MLPBody`).
        heads: ``"multi"`` (one output head per task, picked by the task index; CW),
            ``"single"``, or ``"auto"``: multi when observations carry the task one-hot.
        task_in_trunk: the trunk also reads the task one-hot (CW: no, it only picks the head).
        prev_action: recurrent cells read the previous action.
        prev_reward: recurrent cells read the previous reward (the evaluator passes it to
            ``act``; a direct ``act``/``predict`` call must pass ``rewards=``).
        lr: Adam learning rate.
        adam_eps: Adam epsilon (1e-7 is Keras', which CW used).
        batch_size: rows per update: transitions (MLP; None: CW's 128) or windows of up to
            ``seq_len`` steps (recurrent; None: ``RECURRENT_BATCH`` windows).
        gamma: discount.
        polyak: target critic <- polyak * target + (1 - polyak) * critic.
        replay_size: steps the replay holds.
        replay_mode: ``"fifo"`` or ``"reservoir"`` (MLP only).
        seq_len: longest replayed window (recurrent agents): gradients cross up to this many
            steps, so a dependency that long can be learned. 200 holds a whole Meta-World
            episode (CW's horizon) and every memory task up to that length.
        burn_in: None: the recurrent state at a window's start is recomputed by running the
            cells, without gradient, over the episode before it (exact); ``k >= 0``: over at
            most ``k`` steps from a zero state (R2D2-style; 0: windows start from zero).
        chrono_horizon: chrono initialisation of the cells' keep gates for memories up to
            this many steps (Tallec & Ollivier 2018); None: ``seq_len``; 0: off.
        init_log_alpha: initial log entropy coefficient of every task (CW: 1.0).
        target_entropy: None means ``-action_dim``.
        tune_alpha: learn the entropy coefficient toward ``target_entropy`` (SAC v2, CW); False
            keeps it at ``exp(init_log_alpha)`` (SAC v1's fixed temperature). A task with one
            graded step among many free ones drives a tuned coefficient to ~0 before the
            answer is learned, because the free steps carry the average entropy.
        random_steps: uniform-random actions at the start of each task.
        update_after: a task's updates start at this step of the task.
        update_every: steps between rounds of updates.
        gradient_steps: updates per round (None: ``update_every``, one per step).
        reset_replay_on_task_change: empty the replay at each task start (CW: yes).
        reset_optimizer_on_task_change: reset the optimizer at each task start (CW: yes).
        optimizer_reset: how: ``"moments"`` zeroes Adam's moments and keeps its step
            count (CW's ``reset_optimizer``), ``"fresh"`` makes a new Adam (step count 0,
            bias correction restarts). PackNet's resets around retraining follow it too.
        clip_grad_norm: clip the actor's and the critics' gradient norms separately (None: off).
    """

    trunk: str = "mlp"
    hidden_sizes: tuple[int, ...] | None = None
    rnn_size: int = 128
    rnn_layers: int | None = None
    body: str = "cw"
    heads: str = "auto"
    task_in_trunk: bool = False
    prev_action: bool = True
    prev_reward: bool = True
    lr: float = 1e-3
    adam_eps: float = 1e-7
    batch_size: int | None = None
    gamma: float = 0.99
    polyak: float = 0.995
    replay_size: int = 1_000_000
    replay_mode: str = "fifo"
    seq_len: int = 200
    burn_in: int | None = None
    chrono_horizon: int | None = None
    init_log_alpha: float = 1.0
    target_entropy: float | None = None
    tune_alpha: bool = True
    random_steps: int = 10_000
    update_after: int = 1_000
    update_every: int = 50
    gradient_steps: int | None = None
    reset_replay_on_task_change: bool = True
    reset_optimizer_on_task_change: bool = True
    optimizer_reset: str = "moments"
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown agent trunk {self.trunk!r}; allowed: {', '.join(TRUNKS)}")
        recurrent = self.trunk != "mlp"
        if self.hidden_sizes is None:
            self.hidden_sizes = RECURRENT_HIDDEN_SIZES if recurrent else CW_HIDDEN_SIZES
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if self.batch_size is None:
            self.batch_size = RECURRENT_BATCH if recurrent else CW_BATCH
        if self.rnn_layers is None:
            self.rnn_layers = MINGRU_LAYERS if self.trunk == "mingru" else 1
        check_rnn_layers(self.trunk, self.rnn_layers)
        check_body(self.body)
        check_window(self.seq_len, self.burn_in)
        if self.chrono_horizon is None:
            self.chrono_horizon = self.seq_len
        if self.chrono_horizon < 0:
            raise ValueError(f"chrono_horizon must be >= 0 (0: plain initialisation), got {self.chrono_horizon}")
        if self.heads not in HEADS:
            raise ValueError(f"unknown heads {self.heads!r}; allowed: {', '.join(HEADS)}")
        if self.optimizer_reset not in OPTIMIZER_RESETS:
            raise ValueError(f"unknown optimizer_reset {self.optimizer_reset!r}; allowed: "
                             f"{', '.join(OPTIMIZER_RESETS)} (moments: zero Adam's moments, keep its step count, "
                             "as Continual World; fresh: a new Adam)")
        if self.trunk != "mlp" and self.replay_mode != "fifo":
            raise ValueError("recurrent agents replay whole episodes: replay_mode must be 'fifo'")
        for name in ("batch_size", "replay_size", "update_every", "seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("random_steps", "update_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.polyak <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma and polyak must lie in [0, 1], got {self.gamma}, {self.polyak}")
        if any(h <= 0 for h in self.hidden_sizes) or self.rnn_size <= 0:
            raise ValueError(f"hidden_sizes (and rnn_size) must be positive widths, got {self.hidden_sizes} "
                             f"(rnn_size {self.rnn_size})")
        for name in ("lr", "adam_eps"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        if self.clip_grad_norm is not None and not (np.isfinite(self.clip_grad_norm) and self.clip_grad_norm > 0):
            raise ValueError(f"clip_grad_norm must be positive (or None: off), got {self.clip_grad_norm}")
        if not np.isfinite(self.init_log_alpha):
            raise ValueError(f"init_log_alpha must be a finite number, got {self.init_log_alpha}")
        if self.target_entropy is not None and not np.isfinite(self.target_entropy):
            raise ValueError(f"target_entropy must be a finite number (or None: -action_dim), got {self.target_entropy}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SACConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SACConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class SpaceSpec:
    """What the agent needs to know about its env's spaces (saved with the agent).

    ``obs_dim`` is the full observation width; the first ``task_width`` entries are the
    task's observation and, when ``onehot``, the last ``num_tasks`` the task one-hot.
    """

    obs_dim: int
    task_width: int
    num_tasks: int
    action_dim: int
    onehot: bool

    @classmethod
    def from_env(cls, env: gym.Env) -> "SpaceSpec":
        """Read and check an env's spaces; a clear error for spaces the agent cannot handle."""
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ValueError(f"SAC needs a flat Box observation space, this env has {obs_space}")
        if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
            raise ValueError(f"SAC needs a flat Box action space, this env has {act_space}")
        if not (np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0)):
            raise ValueError(f"SAC needs actions in [-1, 1] (Meta-World's Box(-1, 1, (4,))), this env has {act_space}")
        obs_dim = int(obs_space.shape[0])
        layout = getattr(env.unwrapped, "layout", None)
        if layout is None:  # a plain single-task env
            return cls(obs_dim, obs_dim, 1, int(act_space.shape[0]), False)
        return cls(obs_dim, int(layout.task_width), int(layout.num_tasks), int(act_space.shape[0]),
                   layout.task_id == "onehot")


class PolicyState(NamedTuple):
    """What a recurrent policy carries between ``act`` calls: ``[B, S]`` and ``[B, A]``."""

    hidden: Tensor
    prev_action: Tensor


class Callback:
    """Hooks of :meth:`SAC.learn` (Stable-Baselines3 style); subclass what you need."""

    def on_training_start(self, agent: "SAC") -> None:
        """Before the first step of this ``learn`` call."""

    def on_step(self, agent: "SAC") -> bool | None:
        """After each env step, its updates and (at a task's last step) ``on_task_end``.

        Return False to stop training.
        """
        return True

    def on_episode_end(self, agent: "SAC") -> bool | None:
        """After ``on_step`` of an episode's last step: the env is between episodes,
        the point where a checkpoint restores exactly (``agent.task_ended`` tells
        whether a task ended too). Return False to stop training."""
        return True

    def on_training_end(self, agent: "SAC") -> None:
        """After the last step of this ``learn`` call."""


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[["SAC"], bool | None]) -> None:
        self.fn = fn

    def on_step(self, agent: "SAC") -> bool | None:
        return self.fn(agent)


def _callbacks(callback: Callback | Callable | Iterable | None) -> list[Callback]:
    if callback is None:
        return []
    if isinstance(callback, Callback):
        return [callback]
    if callable(callback):
        return [_FunctionCallback(callback)]
    return [c for item in callback for c in _callbacks(item)]


def drive(clock: Any, total_timesteps: int, step: Callable[[], bool],
          callbacks: Callable[[], list[tuple[Callback, Any]]], progress_bar: bool) -> None:
    """The training loop of :meth:`SAC.learn` and :meth:`agents.population.Population.learn`.

    ``step()`` takes one env step (of every member) with its updates and says whether every
    episode just ended; ``callbacks()`` gives the ``(callback, agent)`` pairs to call now;
    ``clock.num_timesteps`` counts the steps.
    """
    end = clock.num_timesteps + int(total_timesteps)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(total_timesteps), unit="step", dynamic_ncols=True, mininterval=1.0)
    for cb, agent in callbacks():
        cb.on_training_start(agent)
    try:
        while clock.num_timesteps < end:
            episode_over = step()
            keep_going = True
            for cb, agent in callbacks():
                keep_going = cb.on_step(agent) is not False and keep_going
            if episode_over:
                for cb, agent in callbacks():
                    keep_going = cb.on_episode_end(agent) is not False and keep_going
            if bar is not None and clock.num_timesteps % 100 == 0:
                bar.update(100)
            if not keep_going:
                break
    finally:
        if bar is not None:
            bar.close()
    for cb, agent in callbacks():
        cb.on_training_end(agent)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file, fsync and ``os.replace``: never half written,
    and never with a NaN or inf (:func:`agents.training.finite.check_finite_state` refuses first)."""
    check_finite_state(obj, str(path))
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


class SAC:
    """Soft actor-critic agent (see the module docstring for the rules it follows).

    ``METRICS`` and ``EPISODE_STATS`` name the ``train/...`` values of :meth:`pop_metrics`.

    Args:
        env: the training env (a ContinualEnv or any env with the spaces above); may be
            None for an agent that only acts (then ``spec`` is required).
        config: hyperparameters, CW defaults.
        protection: a protection method object or name (default ``"finetune"``).
        seed: seeds the networks' initialisation, the action noise, the random
            exploration, the replay sampling and the env's first reset.
        device: where networks and batches live (``"cpu"``, ``"cuda"``...).
        spec: the env's spaces, when ``env`` is None.
    """

    METRICS = ("q", "critic_loss", "actor_loss", "alpha_loss", "entropy", "protection_loss")
    EPISODE_STATS = ("return", "success", "episode_length", "episodes", "nonfinite_episodes")

    def __init__(
        self,
        env: gym.Env | None = None,
        config: SACConfig | None = None,
        protection: Protection | str | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        spec: SpaceSpec | None = None,
    ) -> None:
        self.config = config = config or SACConfig()
        if env is None and spec is None:
            raise ValueError("SAC needs an env or a SpaceSpec")
        self.spec = SpaceSpec.from_env(env) if env is not None else spec
        if env is not None and spec is not None and spec != self.spec:
            raise ValueError(f"this env's spaces {self.spec} differ from the agent's {spec}")
        self.env = env
        self.seed = int(seed)
        self.device = torch.device(device)
        self.protection = make_protection(protection or "finetune") if isinstance(protection, (str, type(None))) else protection

        self.num_tasks = self.spec.num_tasks
        multi = config.heads == "multi" or (config.heads == "auto" and self.spec.onehot)
        self.num_heads = self.num_tasks if multi else 1
        self.net_dim = self.spec.obs_dim if config.task_in_trunk else self.spec.task_width
        self.net_config = NetworkConfig(
            input_dim=self.net_dim, action_dim=self.spec.action_dim, num_heads=self.num_heads,
            trunk=config.trunk, hidden_sizes=config.hidden_sizes, rnn_size=config.rnn_size,
            rnn_layers=config.rnn_layers, body=config.body, prev_action=config.prev_action, prev_reward=config.prev_reward,
            chrono_horizon=config.chrono_horizon if config.trunk != "mlp" else 0,
        )
        self.recurrent = self.net_config.recurrent
        self.target_entropy = -float(self.spec.action_dim) if config.target_entropy is None else float(config.target_entropy)

        with torch.random.fork_rng(devices=[]):  # seeded initialisation, the global stream untouched
            torch.manual_seed(self.seed)
            self.actor = Actor(self.net_config).to(self.device)
            self.critic = TwinCritic(self.net_config).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.nn.Parameter(torch.full((self.num_tasks,), config.init_log_alpha, device=self.device))
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.target_critic.parameters())

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        self.np_random = np.random.default_rng(seeds[0])
        replay_seed = int(seeds[1].generate_state(1)[0])
        if self.recurrent:
            self.replay = SequenceReplay(config.replay_size, self.spec.obs_dim, self.spec.action_dim,
                                         config.seq_len, config.burn_in, seed=replay_seed)
        else:
            self.replay = TransitionReplay(config.replay_size, self.spec.obs_dim, self.spec.action_dim,
                                           config.replay_mode, seed=replay_seed)

        self.num_timesteps = 0  # env steps taken by this agent
        self.task_steps = 0  # steps of the current task
        self.current_task = -1  # the task whose start was handled (-1: none yet)
        self.num_updates = 0
        self.task_ended = False  # the last step ended a task
        self.last_episode_return: float | None = None  # of the last episode finished in this task
        self._explore_task: int | None = None  # the task whose policy acts in this episode's random steps
        self._first_reset = True
        self._obs: np.ndarray | None = None  # None: between episodes
        self._episode_return = 0.0
        self._episode_log: list[tuple[float, float, int]] = []  # (return, success, length)
        self._nonfinite_episodes = 0  # episodes a simulator blow-up ended (agents.training.finite)
        self._metric_sums: Tensor | None = None
        self._metric_count = 0
        self._hooks = {hook: defines(self.protection, hook) for hook in HOOKS}
        if self._hooks["setup"]:
            self.protection.setup(self)
        self.optimizer = self._make_optimizer()

    # ------------------------------------------------------------------ helpers
    def net_obs(self, obs: Tensor) -> Tensor:
        """The part of layout observations ``[..., obs_dim]`` that the networks read."""
        return obs[..., : self.net_dim]

    def trainable_parameters(self) -> list[Tensor]:
        extra = self.protection.trainable_parameters(self) if self._hooks["trainable_parameters"] else []
        return [*self.actor.parameters(), *self.critic.parameters(), self.log_alpha, *extra]

    def named_trainables(self) -> list[tuple[str, Tensor]]:
        """:meth:`trainable_parameters` with names (for error messages)."""
        named = [*(("actor." + n, p) for n, p in self.actor.named_parameters()),
                 *(("critic." + n, p) for n, p in self.critic.named_parameters()), ("log_alpha", self.log_alpha)]
        extra = self.trainable_parameters()[len(named):]
        return named + [(f"{type(self.protection).__name__}.parameter{i}", p) for i, p in enumerate(extra)]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.trainable_parameters()
        try:  # the fused kernel is ~3x faster on CPU and GPU
            return torch.optim.Adam(params, lr=self.config.lr, eps=self.config.adam_eps, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(params, lr=self.config.lr, eps=self.config.adam_eps)

    def reset_optimizer(self, mode: str | None = None) -> None:
        """Reset Adam as ``mode`` (default ``config.optimizer_reset``) says; see :func:`reset_adam`.

        The optimizer is rebuilt over :meth:`trainable_parameters` either way, so tensors
        a protection adds at a task start join it.
        """
        self.optimizer = reset_adam(self.optimizer, self._make_optimizer(), mode or self.config.optimizer_reset)

    def actor_params(self, task: int) -> dict[str, Tensor] | None:
        """The weights the actor uses for ``task`` (the protection may supply them)."""
        return self.protection.task_parameters(self, task) if self._hooks["task_parameters"] else None

    def critic_params(self, task: int) -> dict[str, Tensor] | None:
        """The weights the critics use for ``task``'s updates (a protection may supply them,
        e.g. a hypernetwork generating the critics); None: the critics' own."""
        return self.protection.critic_parameters(self, task) if self._hooks.get("critic_parameters") else None

    def _initial_state(self, batch: int) -> PolicyState:
        return PolicyState(torch.zeros(batch, self.net_config.state_size, device=self.device),
                           torch.zeros(batch, self.spec.action_dim, device=self.device))

    def _noise(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, device=self.device, dtype=like.dtype)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()  # not inference_mode: protections may cache tensors made here for later updates
    def act(
        self,
        obs: np.ndarray,
        state: PolicyState | None,
        episode_start: np.ndarray,
        deterministic: bool,
        positions: np.ndarray,
        rewards: np.ndarray | None = None,
    ) -> tuple[np.ndarray, PolicyState | None]:
        """The batched evaluator's policy protocol: one action per row.

        Args:
            obs: ``[B, obs_dim]`` observations in the sequence's layout.
            state: None at the first call, afterwards what this method returned.
            episode_start: ``[B]`` rows whose recurrent state is reset before acting.
            deterministic: the mean action instead of a sample.
            positions: ``[B]`` the sequence position (task) of each row: picks the head
                and the protection's task weights.
            rewards: ``[B]`` reward of each row's previous step; needed only with
                ``config.prev_reward``.

        Returns:
            actions ``[B, action_dim]`` in [-1, 1] and the new state (None for the MLP).
        """
        obs = np.asarray(obs, dtype=np.float32)
        check_observations(obs, self.spec.obs_dim)
        obs_t = torch.as_tensor(obs, device=self.device)
        batch = obs_t.shape[0]
        task = torch.as_tensor(np.asarray(positions), dtype=torch.long, device=self.device)
        if int(task.min()) < 0 or int(task.max()) >= self.num_tasks:
            raise ValueError(f"positions must lie in 0..{self.num_tasks - 1}, got {np.asarray(positions).tolist()}")
        prev_action = prev_reward = hidden = None
        if self.recurrent:
            start = torch.as_tensor(np.asarray(episode_start, dtype=bool), device=self.device)
            if state is None:
                state = self._initial_state(batch)
            keep = (~start).float().unsqueeze(-1)
            hidden, prev_action = state.hidden * keep, state.prev_action * keep
            if self.config.prev_reward:
                if rewards is None:
                    raise ValueError("this agent reads the previous reward (config.prev_reward): pass rewards= to act/predict")
                prev_reward = torch.as_tensor(np.asarray(rewards, dtype=np.float32), device=self.device) * keep.squeeze(-1)
        mean, log_std, hidden = self._actor_rows(obs_t, prev_action, prev_reward, task, hidden, np.asarray(positions))
        action, _ = squashed_sample(mean, log_std, None if deterministic else self._noise(mean))
        new_state = PolicyState(hidden, action) if self.recurrent else None
        return action.cpu().numpy(), new_state

    def _actor_rows(self, obs, prev_action, prev_reward, task, hidden, positions: np.ndarray):
        """One actor step for a batch of rows; rows of different tasks get their own
        weights when the protection supplies task weights."""
        def run(rows, params):
            def pick(x, unsqueeze=True):
                return None if x is None else (x[rows].unsqueeze(1) if unsqueeze else x[rows])
            mean, log_std, h = self.actor(self.net_obs(pick(obs)).contiguous(), pick(prev_action), pick(prev_reward),
                                          pick(task), pick(hidden, unsqueeze=False), params=params)
            return mean[:, 0], log_std[:, 0], h

        everything = slice(None)
        if not self._hooks["task_parameters"]:
            return run(everything, None)
        mean = torch.empty(obs.shape[0], self.spec.action_dim, device=self.device)
        log_std = torch.empty_like(mean)
        new_hidden = None if hidden is None else torch.empty_like(hidden)
        for position in np.unique(positions):
            rows = torch.as_tensor(np.flatnonzero(positions == position), device=self.device)
            m, s, h = run(rows, self.actor_params(int(position)))
            mean[rows], log_std[rows] = m, s
            if h is not None:
                new_hidden[rows] = h
        return mean, log_std, new_hidden

    def predict(
        self,
        obs: np.ndarray,
        state: PolicyState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        rewards: np.ndarray | None = None,
    ) -> tuple[np.ndarray, PolicyState | None]:
        """Stable-Baselines3's ``predict`` for one observation ``[obs_dim]`` or a batch.

        The task of each row is read from the observation's one-hot when it has one,
        otherwise the task being trained (``current_task``, 0 before training).
        ``episode_start`` defaults to "new episode" when ``state`` is None.
        """
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if episode_start is None:
            episode_start = np.full(len(batch), state is None)
        if self.spec.onehot:
            positions = batch[:, self.spec.obs_dim - self.num_tasks :].argmax(-1)
        else:
            positions = np.full(len(batch), max(self.current_task, 0))
        rewards = None if rewards is None else np.atleast_1d(rewards)
        actions, state = self.act(batch, state, np.atleast_1d(episode_start), deterministic, positions, rewards)
        return (actions[0] if single else actions), state

    # ------------------------------------------------------------------ training loop
    def learn(self, total_timesteps: int, callback: Callback | Callable | Iterable | None = None,
              progress_bar: bool = False) -> "SAC":
        """Train for ``total_timesteps`` env steps, continuing where the last call stopped.

        Args:
            total_timesteps: env steps to take now.
            callback: a :class:`Callback`, a function ``f(agent) -> bool | None`` called
                after every step (False stops), or a list of these.
            progress_bar: show a tqdm progress bar.
        """
        if self.env is None:
            raise ValueError("this agent has no env: pass one to SAC(...) or SAC.load(path, env=...)")
        callbacks = [(cb, self) for cb in _callbacks(callback)]
        drive(self, int(total_timesteps), self._env_step, lambda: callbacks, progress_bar)
        return self

    def _env_step(self) -> bool:
        """One env step, its storage, the due updates and task-end handling; True at an episode end."""
        if self._obs is None:
            self._start_episode()
        obs = self._obs
        # A recurrent actor runs during random steps too, so its state is current when it takes over.
        random_phase = self.task_steps < self.config.random_steps
        explore = self._explore_task if random_phase else None  # a protection's exploration (ClonEx)
        if self.recurrent or not random_phase or explore is not None:
            action = self._policy_action(obs) if explore is None else self._policy_action(obs, explore)
        if random_phase and explore is None:
            action = self.np_random.uniform(-1.0, 1.0, self.spec.action_dim).astype(np.float32)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.num_timesteps += 1
        self.task_steps += 1
        stored = check_transition(next_obs, reward, info, self.num_timesteps, self.current_task)
        if stored:
            self.replay.add(obs, action, reward, next_obs, terminated, truncated, self.current_task)
        else:  # a simulator blow-up: the step is dropped and its episode ends (agents/training/finite.py)
            end_replay_episode(self.replay)
            self._nonfinite_episodes += 1
        self._episode_return += reward if stored else 0.0
        episode_over = bool(terminated or truncated) or not stored
        if episode_over:
            if stored:
                self._episode_log.append((self._episode_return, float(info.get("success", False)), self._episode_length + 1))
            self.last_episode_return = float(self._episode_return)
            self._obs = None
        else:
            self._obs = next_obs
            self._episode_length += 1
            if self.recurrent:
                self._prev_action = torch.as_tensor(action, device=self.device).view(1, 1, -1)
                self._prev_reward = torch.full((1, 1), float(reward), device=self.device)
        cfg = self.config
        index = self.task_steps - 1  # CW's current_task_timestep of the step just taken
        if index >= cfg.update_after and index % cfg.update_every == 0:
            for _ in range(cfg.gradient_steps or cfg.update_every):
                self.gradient_step()
        self.task_ended = bool(info.get("task_switch", False))
        if self.task_ended and self._hooks["on_task_end"]:
            self.protection.on_task_end(self, self.current_task)
        return episode_over

    def _start_episode(self) -> None:
        seed = self.seed if self._first_reset else None
        obs, info = self.env.reset(seed=seed)
        self._first_reset = False
        task = int(info.get("task_index", 0))
        if task != self.current_task:
            self._start_task(task)
        self._obs = obs
        self._episode_return, self._episode_length = 0.0, 0
        self._explore_task = None
        if self._hooks["exploration_task"] and self.task_steps < self.config.random_steps:
            self._explore_task = self.protection.exploration_task(self, self.current_task)
        if self.recurrent:
            self._hidden = torch.zeros(1, self.net_config.state_size, device=self.device)
            self._prev_action = torch.zeros(1, 1, self.spec.action_dim, device=self.device)
            self._prev_reward = torch.zeros(1, 1, device=self.device)

    def _start_task(self, task: int) -> None:
        """CW's task change: protection hook, empty replay, optimizer reset, counters."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"the env reports task {task}, outside this agent's 0..{self.num_tasks - 1}")
        self.current_task = task
        self.task_steps = 0
        self.last_episode_return = None
        self._task_tensor = torch.full((1, 1), task, dtype=torch.long, device=self.device)
        if self._hooks["on_task_start"]:
            self.protection.on_task_start(self, task)
        if self.config.reset_replay_on_task_change:
            self.replay.clear()
        if self.config.reset_optimizer_on_task_change:
            self.reset_optimizer()

    @torch.no_grad()  # not inference_mode: protections may cache tensors made here for later updates
    def _policy_action(self, obs: np.ndarray, task: int | None = None) -> np.ndarray:
        """A sampled action of the current task's policy (or of ``task``'s head and weights)."""
        obs_t = self.net_obs(torch.as_tensor(obs, device=self.device)).view(1, 1, -1)
        task = self.current_task if task is None else int(task)
        params = self.actor_params(task)
        task_t = self._task_tensor if task == self.current_task else torch.full_like(self._task_tensor, task)
        if self.recurrent:
            mean, log_std, self._hidden = self.actor(obs_t, self._prev_action, self._prev_reward, task_t,
                                                     self._hidden, params=params)
        else:
            mean, log_std, _ = self.actor(obs_t, task=task_t, params=params)
        action, _ = squashed_sample(mean, log_std, self._noise(mean))
        return action.view(-1).cpu().numpy()

    # ------------------------------------------------------------------ updates
    def _mean(self, x: Tensor, mask: Tensor) -> Tensor:
        """The loss terms' mean over a batch (a population takes it per member, :mod:`agents.population`)."""
        return masked_mean(x, mask)

    def _log_alpha_of(self, task: Tensor) -> Tensor:
        """The entropy coefficient (log) of each step's task, shaped like ``task``."""
        return self.log_alpha[task]

    def compute_loss(self, batch: Batch, include_protection: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """The summed SAC loss (critics + actor + entropy coefficients [+ protection]) of a batch.

        Returns the loss and detached metrics (``q``, ``critic_loss``, ``actor_loss``,
        ``alpha_loss``, ``entropy``, ``protection_loss``).
        """
        cfg = self.config
        steps = batch.steps
        obs = self.net_obs(batch.obs).contiguous()  # strided inputs make F.linear several times slower
        task, mask = batch.task, batch.mask
        task_ext = torch.cat([task, task[:, -1:]], dim=1)
        params = self.actor_params(self.current_task)

        critic_params = self.critic_params(self.current_task)  # None: the critics' own weights
        if self.recurrent:  # one pass of every cell over all T + 1 observations serves every term
            q_params = {key: None if critic_params is None else sub_params(critic_params, key) for key in ("q1", "q2")}
            start = self._window_states(batch, params, q_params)
            names = ("actor", "q1", "q2", "target_q1", "target_q2")
            trunks = [(self.actor, params), (self.critic.q1, q_params["q1"]), (self.critic.q2, q_params["q2"]),
                      (self.target_critic.q1, None), (self.target_critic.q2, None)]
            features = dict(zip(names, shared_input_features(trunks, obs, batch.prev_action, batch.prev_reward,
                                                             [start.get(name) for name in names])))
            mean, log_std = self.actor.policy(features["actor"], task_ext, params=params)
            action_all, logp_all = squashed_sample(mean, log_std, self._noise(mean))
            action_pi, logp_pi = action_all[:, :steps], logp_all[:, :steps]
            next_action, next_logp = action_all[:, 1:].detach(), logp_all[:, 1:].detach()
        else:
            obs_now, obs_next = obs[:, :steps].contiguous(), obs[:, 1:].contiguous()
            mean, log_std, _ = self.actor(obs_now, task=task, params=params)
            action_pi, logp_pi = squashed_sample(mean, log_std, self._noise(mean))
            with torch.no_grad():
                mean, log_std, _ = self.actor(obs_next, task=task, params=params)
                next_action, next_logp = squashed_sample(mean, log_std, self._noise(mean))

        log_alpha = self._log_alpha_of(task)
        alpha = log_alpha.detach().exp()
        def encode(name, first, last):  # per-step critic features of observations first..last
            if self.recurrent:
                return features[name][:, first:last]
            return obs_now if first == 0 else obs_next

        with torch.no_grad():
            target_q = torch.minimum(*(q.values(encode(f"target_{name}", 1, steps + 1).detach(), next_action, task)
                                       for name, q in zip(("q1", "q2"), self.target_critic.critics)))
            backup = batch.reward + cfg.gamma * (1.0 - batch.terminated) * (target_q - alpha * next_logp)

        critic_loss, q_pi, q_taken = 0.0, [], []
        for key, q in zip(("q1", "q2"), self.critic.critics):
            q_params = None if critic_params is None else sub_params(critic_params, key)
            shared = q.feature_part(encode(key, 0, steps), params=q_params)  # W_f f, for both actions
            value = q.values(None, batch.action, task, params=q_params, feature_part=shared)
            critic_loss = critic_loss + 0.5 * self._mean((value - backup).square(), mask)
            q_taken.append(value)
            frozen = {name: p.detach() for name, p in (q_params or dict(q.named_parameters())).items()}
            q_pi.append(q.values(None, action_pi, task, params=frozen, feature_part=shared.detach()))
        actor_loss = self._mean(alpha * logp_pi - torch.minimum(*q_pi), mask)
        if cfg.tune_alpha:
            alpha_loss = -self._mean(log_alpha * (logp_pi.detach() + self.target_entropy), mask)
        else:  # a fixed temperature: log_alpha gets no gradient, Adam leaves it alone
            alpha_loss = torch.zeros_like(critic_loss)
        loss = critic_loss + actor_loss + alpha_loss
        protection_loss = None
        if include_protection and self._hooks["loss"]:
            protection_loss = self.protection.loss(self, batch)
            if protection_loss is not None:
                loss = loss + protection_loss
        metrics = {
            "q": self._mean(q_taken[0], mask).detach(),
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "entropy": -self._mean(logp_pi, mask).detach(),
            "protection_loss": torch.zeros_like(critic_loss) if protection_loss is None else protection_loss.detach(),
        }
        return loss, metrics

    def _window_states(self, batch: Batch, actor_params, critic_params: dict | None = None) -> dict[str, Tensor]:
        """Every network's recurrent state at its windows' start: an unroll over the
        batch's prefix without gradient (empty when every window starts its episode)."""
        if batch.prefix_obs is None or batch.prefix_obs.shape[1] == 0:
            return {}
        inputs = (self.net_obs(batch.prefix_obs).contiguous(), batch.prefix_prev_action, batch.prefix_prev_reward,
                  batch.prefix_mask)
        states = {"actor": self.actor.initial_state(*inputs, params=actor_params)}
        for name in ("q1", "q2"):
            states[name] = getattr(self.critic, name).initial_state(*inputs, params=(critic_params or {}).get(name))
            states[f"target_{name}"] = getattr(self.target_critic, name).initial_state(*inputs)
        return states

    def gradient_step(self) -> None:
        """One update on a batch from the replay: backward, protection, step, polyak."""
        batch = self.replay.sample(self.config.batch_size, self.device)
        loss, metrics = self.compute_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self._hooks["after_backward"]:
            self.protection.after_backward(self)
        if self.config.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.actor.parameters(), self.config.clip_grad_norm)
            torch.nn.utils.clip_grad_norm_(self._critic_params, self.config.clip_grad_norm)
        values = torch.stack(list(metrics.values()))
        check_update(torch.cat([loss.detach().view(1), values]), ["loss", *metrics], self.named_trainables(),
                     f"update {self.num_updates + 1} at env step {self.num_timesteps} (task {self.current_task})")
        self.optimizer.step()
        if self._hooks["after_step"]:  # e.g. continual backprop's unit replacement
            self.protection.after_step(self)
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._polyak_sources(), 1.0 - self.config.polyak)
        self._metric_sums = values if self._metric_sums is None else self._metric_sums + values
        self._metric_names = list(metrics)
        self.num_updates += 1
        self._metric_count += 1

    def _polyak_sources(self) -> list[Tensor]:
        """What the target critics move toward: the critics' weights, or the (updated)
        weights a protection supplies for them (in ``target_critic`` order)."""
        if not self._hooks.get("critic_parameters"):
            return self._critic_params
        generated = self.critic_params(self.current_task)
        if generated is None:
            return self._critic_params
        return [generated[name].detach() for name, _ in self.critic.named_parameters()]

    def pop_metrics(self) -> dict[str, float]:
        """Training statistics since the last call: mean losses (``train/...``), the
        episodes finished (return, success, length) and every task's entropy coefficient."""
        out: dict[str, float] = {}
        if self._metric_count:
            means = (self._metric_sums / self._metric_count).tolist()
            out.update({f"train/{name}": value for name, value in zip(self._metric_names, means)})
        if self._episode_log:
            returns, successes, lengths = zip(*self._episode_log)
            out.update({"train/return": float(np.mean(returns)), "train/success": float(np.mean(successes)),
                        "train/episode_length": float(np.mean(lengths)), "train/episodes": float(len(returns))})
        out["train/nonfinite_episodes"] = float(self._nonfinite_episodes)
        for task, alpha in enumerate(self.log_alpha.detach().exp().tolist()):
            out[f"train/alpha/{task}"] = alpha
        self._metric_sums, self._metric_count, self._episode_log = None, 0, []
        self._nonfinite_episodes = 0
        return out

    # ------------------------------------------------------------------ saving
    def _model_state(self) -> dict[str, Any]:
        return {
            "format": SAVE_FORMAT,
            "config": asdict(self.config),
            "spec": asdict(self.spec),
            "seed": self.seed,
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "current_task": self.current_task,
            "num_timesteps": self.num_timesteps,
            "protection_name": getattr(self.protection, "name", type(self.protection).__name__),
            "protection": self.protection.state_dict(),
        }

    def _load_model_state(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.current_task = int(state["current_task"])
        self.num_timesteps = int(state["num_timesteps"])
        self.protection.load_state_dict(state["protection"])

    def save(self, path: str | Path) -> None:
        """Write the agent (networks, entropy coefficients, protection, config) to one
        file, atomically. Replay and optimizer are not included: see
        :mod:`agents.training.checkpoint` for resumable training checkpoints."""
        atomic_torch_save(self._model_state(), path)

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | None = None, device: torch.device | str = "cpu") -> "SAC":
        """A new agent from a file written by :meth:`save` (classmethod, like SB3's).

        ``env`` (optional) is attached for further training; its spaces must match.
        """
        state = read_agent_file(path, device)
        spec = SpaceSpec(**state["spec"])
        # Files written before stacked minGRU layers existed have one layer (rnn_layers=None would give 2).
        config = SACConfig.from_dict({"rnn_layers": 1, **state["config"]})
        name = state["protection_name"]
        agent = cls(env, config, protection=make_protection(name), seed=state["seed"], device=device, spec=spec)
        agent._load_model_state(state)
        return agent

    def training_state(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (taken between episodes)."""
        if self._obs is not None:
            raise RuntimeError("training state is only exact between episodes; take it in Callback.on_episode_end")
        return {
            "model": self._model_state(),
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
            "generator": self.generator.get_state(),
            "np_random": self.np_random.bit_generator.state,
            "counters": {"task_steps": self.task_steps, "num_updates": self.num_updates,
                         "first_reset": self._first_reset, "task_ended": self.task_ended,
                         "last_episode_return": self.last_episode_return},
            "logs": {"episodes": list(self._episode_log), "metric_sums": self._metric_sums,
                     "metric_count": self._metric_count, "metric_names": getattr(self, "_metric_names", []),
                     "nonfinite_episodes": self._nonfinite_episodes},
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state` into this agent (same config and spaces)."""
        self._load_model_state(state["model"])
        if self.current_task >= 0:
            self._task_tensor = torch.full((1, 1), self.current_task, dtype=torch.long, device=self.device)
        self.optimizer = self._make_optimizer()  # after the protection, whose parameters may join it
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.generator.set_state(state["generator"].cpu())
        self.np_random.bit_generator.state = state["np_random"]
        counters = state["counters"]
        self.task_steps, self.num_updates = int(counters["task_steps"]), int(counters["num_updates"])
        self._first_reset, self.task_ended = bool(counters["first_reset"]), bool(counters["task_ended"])
        self.last_episode_return = counters.get("last_episode_return")
        logs = state["logs"]
        self._episode_log = [tuple(e) for e in logs["episodes"]]
        sums = logs["metric_sums"]
        self._metric_sums = None if sums is None else sums.to(self.device)
        self._metric_count = int(logs["metric_count"])
        self._metric_names = list(logs["metric_names"])
        self._nonfinite_episodes = int(logs.get("nonfinite_episodes", 0))
        self._obs = None


ADAM_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def reset_adam(old: torch.optim.Optimizer, new: torch.optim.Optimizer, mode: str = "moments") -> torch.optim.Optimizer:
    """``new`` (a fresh Adam over the current parameters), carrying ``old``'s step counts when
    ``mode="moments"``.

    ``"moments"`` is Continual World's ``reset_optimizer`` (``continualworld/utils/utils.py``):
    it zeroes every optimizer variable but the first, TF2's global ``iterations``, so the
    first and second moments restart at zero while the bias correction ``1 - beta^t`` keeps
    counting. torch keeps a step count per parameter; each parameter that ``old`` has
    stepped keeps its own. (CW's one Keras Adam is applied three times per update, to
    actor, critics and entropy coefficients, so its ``iterations`` grows by 3 per update;
    after a task of updates the correction is 1 either way.) Since the count is kept, the
    restarted moments are *not* bias-corrected: with a steady gradient, the step
    ``m / sqrt(v)`` after ``k`` updates is ``(1 - 0.9^k) / sqrt(1 - 0.999^k)`` times Adam's
    usual one, about 3.2 at ``k = 1``, 6.5 at ``k = 10``, 2.4 at 200 and 1.26 at 1,000: CW's
    tasks start with larger steps than a fresh Adam would take.
    ``"fresh"`` returns ``new`` as is: step counts restart and the bias correction with them.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> adam = torch.optim.Adam([w])
        >>> for _ in range(3):
        ...     w.grad = torch.ones(2); adam.step()
        >>> kept = reset_adam(adam, torch.optim.Adam([w]), "moments")
        >>> float(kept.state[w]["step"]), kept.state[w]["exp_avg"].abs().sum().item()
        (3.0, 0.0)
        >>> len(reset_adam(adam, torch.optim.Adam([w]), "fresh").state)
        0
    """
    if mode not in OPTIMIZER_RESETS:
        raise ValueError(f"unknown optimizer reset {mode!r}; allowed: {', '.join(OPTIMIZER_RESETS)}")
    if mode == "fresh":
        return new
    wanted = {id(p) for group in new.param_groups for p in group["params"]}
    for p, state in old.state.items():
        if id(p) not in wanted or "step" not in state:
            continue
        new.state[p] = {key: (torch.zeros_like(value) if key in ADAM_MOMENTS else value.clone())
                        for key, value in state.items()}
    return new


def read_agent_file(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a file written by :meth:`SAC.save`; a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no agent file at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise ValueError(f"{path}: not a readable agent file (truncated or corrupt?): {err}") from None
    if not isinstance(state, dict) or state.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path}: not an agent file written by SAC.save (format {SAVE_FORMAT})")
    return state
