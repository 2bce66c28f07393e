"""Soft actor-critic with the Continual World rules, for MLP, GRU and LSTM trunks.

The agent speaks Stable-Baselines3's verbs (``learn``, ``predict``, ``save``, ``load``)
and the batched evaluator's ``act``. It trains on a :class:`~contenv.ContinualEnv` (or
any env with a 1-D ``Box`` observation and a ``Box(-1, 1)`` action) following Continual
World (Wolczyk et al., NeurIPS 2021; ``continualworld/sac/sac.py``):

- Adam, lr 1e-3, batch 128, gamma 0.99, polyak 0.995, FIFO replay of 1e6 steps;
- one learned entropy coefficient per task (``log_alpha[task]``, initialised to 1 as in
  CW), target entropy ``-|A|``;
- at each task start: the protection's ``on_task_start``, the replay emptied and a new
  optimizer object (not only zeroed); then 10,000 uniform-random actions, updates from
  the 1,000th step of the task on, 50 updates after every 50th step;
- bootstrapping through time limits and task switches (only ``terminated`` stops it);
- actor, critic and entropy losses from one batch, one backward pass and one optimizer
  step (the actor's ``Q`` uses detached critic weights, so its gradient reaches only the
  actor, as in CW's separate gradient tapes).

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
from agents.networks import CW_HIDDEN_SIZES, TRUNKS, Actor, NetworkConfig, TwinCritic, squashed_sample
from agents.protection import HOOKS, Protection, defines, make_protection
from agents.replay import Batch, SequenceReplay, TransitionReplay

HEADS = ("auto", "multi", "single")
SAVE_FORMAT = "contenv-sac-v1"


@dataclass
class SACConfig:
    """Every knob of the agent; the defaults are Continual World's (MLP agent).

    Attributes:
        trunk: ``"mlp"`` (CW), ``"gru"`` or ``"lstm"``.
        hidden_sizes: hidden layers of every body (CW: 4 x 256).
        rnn_size: width of the recurrent cells.
        heads: ``"multi"`` (one output head per task, picked by the task index; CW),
            ``"single"``, or ``"auto"``: multi when observations carry the task one-hot.
        task_in_trunk: the trunk also reads the task one-hot (CW: no, it only picks the head).
        prev_action: recurrent cells read the previous action.
        prev_reward: recurrent cells read the previous reward (the evaluator passes it to
            ``act``; a direct ``act``/``predict`` call must pass ``rewards=``).
        lr: Adam learning rate.
        adam_eps: Adam epsilon (1e-7 is Keras', which CW used).
        batch_size: rows per update (transitions, or sub-sequences for recurrent agents).
        gamma: discount.
        polyak: target critic <- polyak * target + (1 - polyak) * critic.
        replay_size: steps the replay holds.
        replay_mode: ``"fifo"`` or ``"reservoir"`` (MLP only).
        seq_len: steps per replayed sub-sequence whose loss counts (recurrent agents).
        burn_in: earlier steps prepended to warm up the recurrent state (loss masked out).
        init_log_alpha: initial log entropy coefficient of every task (CW: 1.0).
        target_entropy: None means ``-action_dim``.
        random_steps: uniform-random actions at the start of each task.
        update_after: a task's updates start at this step of the task.
        update_every: steps between rounds of updates.
        gradient_steps: updates per round (None: ``update_every``, one per step).
        reset_replay_on_task_change: empty the replay at each task start (CW: yes).
        reset_optimizer_on_task_change: a new optimizer at each task start (CW: yes).
        clip_grad_norm: clip the actor's and the critics' gradient norms separately (None: off).
    """

    trunk: str = "mlp"
    hidden_sizes: tuple[int, ...] = field(default=CW_HIDDEN_SIZES)
    rnn_size: int = 256
    heads: str = "auto"
    task_in_trunk: bool = False
    prev_action: bool = True
    prev_reward: bool = True
    lr: float = 1e-3
    adam_eps: float = 1e-7
    batch_size: int = 128
    gamma: float = 0.99
    polyak: float = 0.995
    replay_size: int = 1_000_000
    replay_mode: str = "fifo"
    seq_len: int = 32
    burn_in: int = 0
    init_log_alpha: float = 1.0
    target_entropy: float | None = None
    random_steps: int = 10_000
    update_after: int = 1_000
    update_every: int = 50
    gradient_steps: int | None = None
    reset_replay_on_task_change: bool = True
    reset_optimizer_on_task_change: bool = True
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown agent trunk {self.trunk!r}; allowed: {', '.join(TRUNKS)}")
        if self.heads not in HEADS:
            raise ValueError(f"unknown heads {self.heads!r}; allowed: {', '.join(HEADS)}")
        if self.trunk != "mlp" and self.replay_mode != "fifo":
            raise ValueError("recurrent agents replay whole episodes: replay_mode must be 'fifo'")
        for name in ("batch_size", "replay_size", "update_every", "seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("random_steps", "update_after", "burn_in"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.polyak <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma and polyak must lie in [0, 1], got {self.gamma}, {self.polyak}")

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


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file, fsync and ``os.replace``: never half written."""
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
    EPISODE_STATS = ("return", "success", "episode_length", "episodes")

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
            prev_action=config.prev_action, prev_reward=config.prev_reward,
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
        self._first_reset = True
        self._obs: np.ndarray | None = None  # None: between episodes
        self._episode_return = 0.0
        self._episode_log: list[tuple[float, float, int]] = []  # (return, success, length)
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

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.trainable_parameters()
        try:  # the fused kernel is ~3x faster on CPU and GPU
            return torch.optim.Adam(params, lr=self.config.lr, eps=self.config.adam_eps, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(params, lr=self.config.lr, eps=self.config.adam_eps)

    def actor_params(self, task: int) -> dict[str, Tensor] | None:
        """The weights the actor uses for ``task`` (the protection may supply them)."""
        return self.protection.task_parameters(self, task) if self._hooks["task_parameters"] else None

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
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
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
        callbacks = _callbacks(callback)
        end = self.num_timesteps + int(total_timesteps)
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(total_timesteps), unit="step", dynamic_ncols=True, mininterval=1.0)
        for cb in callbacks:
            cb.on_training_start(self)
        try:
            while self.num_timesteps < end:
                episode_over = self._env_step()
                keep_going = True
                for cb in callbacks:
                    keep_going = cb.on_step(self) is not False and keep_going
                if episode_over:
                    for cb in callbacks:
                        keep_going = cb.on_episode_end(self) is not False and keep_going
                if bar is not None and self.num_timesteps % 100 == 0:
                    bar.update(100)
                if not keep_going:
                    break
        finally:
            if bar is not None:
                bar.close()
        for cb in callbacks:
            cb.on_training_end(self)
        return self

    def _env_step(self) -> bool:
        """One env step, its storage, the due updates and task-end handling; True at an episode end."""
        if self._obs is None:
            self._start_episode()
        obs = self._obs
        # A recurrent actor runs during random steps too, so its state is current when it takes over.
        if self.recurrent or self.task_steps >= self.config.random_steps:
            action = self._policy_action(obs)
        if self.task_steps < self.config.random_steps:
            action = self.np_random.uniform(-1.0, 1.0, self.spec.action_dim).astype(np.float32)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.num_timesteps += 1
        self.task_steps += 1
        self.replay.add(obs, action, reward, next_obs, terminated, truncated, self.current_task)
        self._episode_return += reward
        episode_over = bool(terminated or truncated)
        if episode_over:
            self._episode_log.append((self._episode_return, float(info.get("success", False)), self._episode_length + 1))
            self._obs = None
        else:
            self._obs = next_obs
            self._episode_length += 1
            if self.recurrent:
                self._prev_action = torch.as_tensor(action, device=self.device).view(1, 1, -1)
                self._prev_reward = torch.full((1, 1), float(reward), device=self.device)
        cfg = self.config
        if self.task_steps >= cfg.update_after and self.task_steps % cfg.update_every == 0:
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
        if self.recurrent:
            self._hidden = torch.zeros(1, self.net_config.state_size, device=self.device)
            self._prev_action = torch.zeros(1, 1, self.spec.action_dim, device=self.device)
            self._prev_reward = torch.zeros(1, 1, device=self.device)

    def _start_task(self, task: int) -> None:
        """CW's task change: protection hook, empty replay, new optimizer, counters."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"the env reports task {task}, outside this agent's 0..{self.num_tasks - 1}")
        self.current_task = task
        self.task_steps = 0
        self._task_tensor = torch.full((1, 1), task, dtype=torch.long, device=self.device)
        if self._hooks["on_task_start"]:
            self.protection.on_task_start(self, task)
        if self.config.reset_replay_on_task_change:
            self.replay.clear()
        if self.config.reset_optimizer_on_task_change:
            self.optimizer = self._make_optimizer()

    @torch.no_grad()  # not inference_mode: protections may cache tensors made here for later updates
    def _policy_action(self, obs: np.ndarray) -> np.ndarray:
        obs_t = self.net_obs(torch.as_tensor(obs, device=self.device)).view(1, 1, -1)
        params = self.actor_params(self.current_task)
        if self.recurrent:
            mean, log_std, self._hidden = self.actor(obs_t, self._prev_action, self._prev_reward, self._task_tensor,
                                                     self._hidden, params=params)
        else:
            mean, log_std, _ = self.actor(obs_t, task=self._task_tensor, params=params)
        action, _ = squashed_sample(mean, log_std, self._noise(mean))
        return action.view(-1).cpu().numpy()

    # ------------------------------------------------------------------ updates
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

        if self.recurrent:  # one pass over all T + 1 observations serves both actor terms
            mean, log_std, _ = self.actor(obs, batch.prev_action, batch.prev_reward, task_ext, params=params)
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

        log_alpha = self.log_alpha[task]
        alpha = log_alpha.detach().exp()
        def encode(q, first, last):  # per-step critic features of observations first..last
            if self.recurrent:
                return q.encode(obs, batch.prev_action, batch.prev_reward)[0][:, first:last]
            return obs_now if first == 0 else obs_next

        with torch.no_grad():
            target_q = torch.minimum(*(q.values(encode(q, 1, steps + 1), next_action, task)
                                       for q in self.target_critic.critics))
            backup = batch.reward + cfg.gamma * (1.0 - batch.terminated) * (target_q - alpha * next_logp)

        critic_loss, q_pi, q_taken = 0.0, [], []
        for q in self.critic.critics:
            features = encode(q, 0, steps)
            value = q.values(features, batch.action, task)
            critic_loss = critic_loss + 0.5 * masked_mean((value - backup).square(), mask)
            q_taken.append(value)
            frozen = {name: p.detach() for name, p in q.named_parameters()}
            q_pi.append(q.values(features.detach(), action_pi, task, params=frozen))
        actor_loss = masked_mean(alpha * logp_pi - torch.minimum(*q_pi), mask)
        alpha_loss = -masked_mean(log_alpha * (logp_pi.detach() + self.target_entropy), mask)
        loss = critic_loss + actor_loss + alpha_loss
        protection_loss = None
        if include_protection and self._hooks["loss"]:
            protection_loss = self.protection.loss(self, batch)
            if protection_loss is not None:
                loss = loss + protection_loss
        metrics = {
            "q": masked_mean(q_taken[0], mask).detach(),
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "entropy": -masked_mean(logp_pi, mask).detach(),
            "protection_loss": torch.zeros((), device=self.device) if protection_loss is None else protection_loss.detach(),
        }
        return loss, metrics

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
        self.optimizer.step()
        if self._hooks["after_step"]:  # e.g. continual backprop's unit replacement
            self.protection.after_step(self)
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, 1.0 - self.config.polyak)
        values = torch.stack(list(metrics.values()))
        self._metric_sums = values if self._metric_sums is None else self._metric_sums + values
        self._metric_names = list(metrics)
        self.num_updates += 1
        self._metric_count += 1

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
        for task, alpha in enumerate(self.log_alpha.detach().exp().tolist()):
            out[f"train/alpha/{task}"] = alpha
        self._metric_sums, self._metric_count, self._episode_log = None, 0, []
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
        :mod:`agents.checkpoint` for resumable training checkpoints."""
        atomic_torch_save(self._model_state(), path)

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | None = None, device: torch.device | str = "cpu") -> "SAC":
        """A new agent from a file written by :meth:`save` (classmethod, like SB3's).

        ``env`` (optional) is attached for further training; its spaces must match.
        """
        state = read_agent_file(path, device)
        spec = SpaceSpec(**state["spec"])
        config = SACConfig.from_dict(state["config"])
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
                         "first_reset": self._first_reset, "task_ended": self.task_ended},
            "logs": {"episodes": list(self._episode_log), "metric_sums": self._metric_sums,
                     "metric_count": self._metric_count, "metric_names": getattr(self, "_metric_names", [])},
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
        logs = state["logs"]
        self._episode_log = [tuple(e) for e in logs["episodes"]]
        sums = logs["metric_sums"]
        self._metric_sums = None if sums is None else sums.to(self.device)
        self._metric_count = int(logs["metric_count"])
        self._metric_names = list(logs["metric_names"])
        self._obs = None


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
