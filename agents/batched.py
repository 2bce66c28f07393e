"""Seed batching: K seeds of one SAC configuration trained in one process, parameters stacked.

Every seed is a full :class:`~agents.sac.SAC` (its own env, replay, generators, counters,
episode log), so the Continual World rules (task change: empty replay, optimizer reset,
random steps, update schedule) are the very code of ``agents/sac.py``. What changes:

- **weights**: actor, critics, target critics and ``log_alpha`` of all seeds live in
  stacked tensors ``[K, ...]``; each seed's modules hold *views* of its slice, so the
  seed's own ``act`` (evaluation), ``save`` and checkpoints read the live weights;
- **acting**: one actor call for all K seeds per step (``torch.func.vmap``);
- **updates**: ``SAC.compute_loss`` itself, run for all seeds at once by ``vmap`` over
  ``torch.func.functional_call``; one backward of the summed losses gives every seed the
  gradient of its own loss (seeds share nothing), and one Adam over the stacked tensors
  equals K independent Adams (Adam is elementwise and all seeds step together);
- **randomness**: each seed draws its action and loss noise from its own generator in
  the same order as a single-seed run, samples its own replay and explores with its own
  ``np_random``; the noise is drawn outside ``vmap`` and passed in.

The seeds run in lockstep (all envs share ``steps_per_task``, so task changes and
update rounds fall on the same step for all); a checkpoint is taken only at a step where
every seed is between episodes (always true at a task end), so a resume restarts all
seeds at the same step. Protections other than ``finetune`` are refused (run them
through a sweep, one process per seed).

Example:
    >>> import gymnasium as gym, contenv
    >>> envs = [gym.make("contenv/Sequence-v0", tasks=["reach-v3"], steps_per_task=30, horizon=10).unwrapped
    ...         for _ in range(2)]
    >>> config = SACConfig(hidden_sizes=(8,), batch_size=4, random_steps=5, update_after=10, update_every=10)
    >>> trainer = BatchedSAC(envs, config, seeds=[0, 1])
    >>> _ = trainer.learn(30)
    >>> [agent.num_timesteps for agent in trainer.agents], trainer.params["log_alpha"].shape
    ([30, 30], torch.Size([2, 1]))
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from agents.finite import check_update
from agents.networks import Actor, TwinCritic, squashed_sample
from agents.protection import HOOKS
from agents.replay import Batch
from agents.sac import SAC, Callback, SACConfig, _callbacks, reset_adam

SUPPORTED_PROTECTIONS = ("finetune",)
_BATCH_FIELDS = ("obs", "action", "reward", "terminated", "task", "mask", "prev_action", "prev_reward",
                 "prefix_obs", "prefix_prev_action", "prefix_prev_reward", "prefix_mask")


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """``"0-9"``, ``"0,1,2"`` or ``"0-3,7"`` (or a list of ints) -> the seeds, in order.

    Example:
        >>> parse_seeds("0-3,7"), parse_seeds("5")
        ([0, 1, 2, 3, 7], [5])
    """
    if not isinstance(text, str):
        seeds = [int(s) for s in text]
    elif not text.strip():
        seeds = []
    else:
        seeds = []
        for part in text.replace(" ", "").split(","):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not match:
                raise ValueError(f"--seeds {text!r}: expected seeds like '0-9', '0,1,2' or '0-3,7' "
                                 f"(non-negative integers), got the part {part!r}")
            first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
            if last < first:
                raise ValueError(f"--seeds {text!r}: the range {part!r} runs backwards")
            seeds.extend(range(first, last + 1))
    if not seeds:
        raise ValueError("--seeds: no seeds given")
    if min(seeds) < 0:
        raise ValueError(f"--seeds: seeds must be non-negative, got {seeds}")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise ValueError(f"--seeds: seeds {duplicates} appear more than once")
    return seeds


def check_protection(name: Any) -> None:
    """A clear error for a protection that seed batching does not support."""
    name = getattr(name, "name", name)
    if name not in SUPPORTED_PROTECTIONS:
        raise ValueError(f"seed batching (--seeds) supports the protection 'finetune' only, not {name!r}: "
                         "train other methods one seed per process (scripts/train.py --seed N, or scripts/sweep.py)")


class SeedAgent(SAC):
    """One seed of a :class:`BatchedSAC`: a SAC whose weights are views of the stacked
    tensors, whose actions and updates the trainer computes for all seeds at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainer: BatchedSAC | None = None
        self.index = 0
        self._pending_action: np.ndarray | None = None
        self._requested_updates = 0

    def _policy_action(self, obs: np.ndarray) -> np.ndarray:
        action, self._pending_action = self._pending_action, None  # computed for all seeds by the trainer
        if action is None:
            raise RuntimeError("a SeedAgent acts only through its BatchedSAC")
        return action

    def gradient_step(self) -> None:
        self._requested_updates += 1  # the trainer runs the updates of all seeds together

    def training_state(self) -> dict[str, Any]:
        state = super().training_state()
        state["optimizer"] = self.trainer.seed_optimizer_state(self.index)  # this seed's slice of the shared Adam
        return state


class _SeedLoss(nn.Module):
    """Holds one seed's networks (template shapes) and runs ``SAC.compute_loss`` on them,
    so ``functional_call`` can put any seed's (or, under ``vmap``, every seed's) weights in."""

    def __init__(self, agent: SAC) -> None:
        super().__init__()
        self.actor, self.critic = Actor(agent.net_config), TwinCritic(agent.net_config)
        self.target_critic = TwinCritic(agent.net_config).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(agent.num_tasks))
        self.to(agent.device)
        # The attributes compute_loss reads from its agent.
        self.config, self.recurrent, self.net_dim = agent.config, agent.recurrent, agent.net_dim
        self.target_entropy, self.device, self.current_task = agent.target_entropy, agent.device, 0
        self._hooks = {hook: False for hook in HOOKS}
        self._noises: list[Tensor] = []

    net_obs = SAC.net_obs
    _window_states = SAC._window_states

    def actor_params(self, task: int) -> None:
        return None

    def critic_params(self, task: int) -> None:
        return None

    def _noise(self, like: Tensor) -> Tensor:
        noise = self._noises.pop(0)
        if noise.shape != like.shape:
            raise RuntimeError(f"pre-drawn noise {tuple(noise.shape)} does not fit {tuple(like.shape)}: "
                               "noise_shapes() is out of date with SAC.compute_loss")
        return noise

    def forward(self, fields: dict[str, Tensor], noises: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        self._noises = list(noises)
        loss, metrics = SAC.compute_loss(self, Batch(**fields), include_protection=False)
        if self._noises:
            raise RuntimeError("compute_loss drew less noise than noise_shapes() promised")
        return loss, torch.stack(list(metrics.values()))


def noise_shapes(recurrent: bool, batch_size: int, steps: int, action_dim: int) -> list[tuple[int, ...]]:
    """The shapes, in order, of the standard-normal draws that ``SAC.compute_loss`` makes."""
    if recurrent:  # one pass over all T + 1 observations
        return [(batch_size, steps + 1, action_dim)]
    return [(batch_size, steps, action_dim)] * 2  # current, then next actions


class BatchedSAC:
    """Train ``len(seeds)`` SAC agents of one configuration together (see the module docstring).

    Args:
        envs: one training env per seed (same scenario and budget).
        config: the agent configuration shared by all seeds.
        seeds: one seed per env; seed ``s`` initialises and draws exactly as ``SAC(seed=s)``.
        device: where the stacked weights and the updates live.
        protection: must be ``"finetune"``.
        compile: run the batched loss through ``torch.compile`` (opt-in: on this CPU it
            compiles for ~1 minute and then runs slower than eager; meant for GPUs, where
            fewer kernel launches may help).
    """

    def __init__(self, envs: Sequence[gym.Env], config: SACConfig | None = None, seeds: Sequence[int] = (0,),
                 device: torch.device | str = "cpu", protection: Any = "finetune", compile: bool = False) -> None:
        check_protection(protection)
        seeds = parse_seeds(list(seeds))
        if len(envs) != len(seeds):
            raise ValueError(f"need one env per seed: {len(envs)} envs, {len(seeds)} seeds")
        self.config = config = config or SACConfig()
        self.device = torch.device(device)
        self.agents = [SeedAgent(env, config, seed=s, device=self.device) for env, s in zip(envs, seeds)]
        first = self.agents[0]
        for agent in self.agents[1:]:
            if agent.spec != first.spec:
                raise ValueError(f"all seeds need the same spaces: {agent.spec} != {first.spec}")
        self.recurrent, self.num_seeds = first.recurrent, len(seeds)
        self.params, self.target_params = self._stack()
        for index, agent in enumerate(self.agents):
            agent.trainer, agent.index = self, index
        self._loss = _SeedLoss(first)
        self._batched_loss = vmap(self._seed_loss, in_dims=(0, 0, 0))
        if compile:
            self._batched_loss = torch.compile(self._batched_loss)
        self._actor = Actor(first.net_config).to(self.device)
        self._actor_keys = [k for k in self.params if k.startswith("actor.")]
        self._trainable = list(self.params.values())  # actor, critic, log_alpha: SAC.trainable_parameters' order
        self._critic = [v for k, v in self.params.items() if k.startswith("critic.")]
        self._target = [self.target_params["target_" + k] for k in self.params if k.startswith("critic.")]
        self.optimizer = self._make_optimizer()
        self._task_of_optimizer = first.current_task

    # ------------------------------------------------------------------ stacking
    def _stack(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Stack every seed's weights; then point each seed's modules at its slice."""
        modules = {"actor": lambda a: a.actor, "critic": lambda a: a.critic, "target_critic": lambda a: a.target_critic}
        params: dict[str, Tensor] = {}
        target: dict[str, Tensor] = {}
        for prefix, get in modules.items():
            for name, _ in get(self.agents[0]).named_parameters():
                stacked = torch.stack([get(a).get_parameter(name).detach() for a in self.agents]).contiguous()
                key = f"{prefix}.{name}"
                if prefix == "target_critic":
                    target[key] = stacked
                else:
                    params[key] = stacked.requires_grad_(True)
        params["log_alpha"] = torch.stack([a.log_alpha.detach() for a in self.agents]).requires_grad_(True)
        everything = {**params, **target}
        for index, agent in enumerate(self.agents):
            for key, stacked in everything.items():
                prefix, _, name = key.partition(".")
                view = nn.Parameter(stacked.detach()[index], requires_grad=False)  # shares the stacked storage
                if prefix == "log_alpha":
                    agent.log_alpha = view
                    continue
                owner, _, leaf = name.rpartition(".")
                setattr(modules[prefix](agent).get_submodule(owner), leaf, view)  # '' is the module itself
            agent._critic_params = list(agent.critic.parameters())
            agent._target_params = list(agent.target_critic.parameters())
            agent.optimizer = agent._make_optimizer()  # over the views (used only to load checkpoints)
        return params, target

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        try:  # the fused kernel is ~3x faster on CPU and GPU (as in SAC._make_optimizer)
            return torch.optim.Adam(self._trainable, lr=cfg.lr, eps=cfg.adam_eps, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(self._trainable, lr=cfg.lr, eps=cfg.adam_eps)

    def seed_optimizer_state(self, index: int) -> dict[str, Any]:
        """Seed ``index``'s slice of the shared Adam, shaped like a single-seed SAC's optimizer state."""
        state = self.optimizer.state_dict()
        sliced = {i: {k: (v if k == "step" else v[index]).clone() for k, v in s.items()} for i, s in state["state"].items()}
        return {"state": sliced, "param_groups": state["param_groups"]}

    def load_optimizer_from_seeds(self) -> None:
        """Rebuild the shared Adam from the seeds' optimizers (after each loaded a checkpoint)."""
        states = [a.optimizer.state_dict() for a in self.agents]
        self.optimizer = self._make_optimizer()
        shared = self.optimizer.state_dict()
        shared["state"] = {i: {k: (v if k == "step" else torch.stack([s["state"][i][k] for s in states]))
                               for k, v in entry.items()} for i, entry in states[0]["state"].items()}
        self.optimizer.load_state_dict(shared)
        self._task_of_optimizer = self.agents[0].current_task

    # ------------------------------------------------------------------ training loop
    def learn(self, total_timesteps: int, callbacks: Sequence[Callback | Iterable | None] | None = None,
              progress_bar: bool = False) -> "BatchedSAC":
        """Train every seed for ``total_timesteps`` more env steps.

        ``callbacks[k]`` (a Callback, a function or a list, as for :meth:`SAC.learn`) sees
        seed ``k``'s agent; ``on_episode_end`` is called only at steps where every seed
        is between episodes (so checkpoints of all seeds share one step).
        """
        per_seed = [_callbacks(c) for c in (callbacks or [None] * self.num_seeds)]
        if len(per_seed) != self.num_seeds:
            raise ValueError(f"need one callback entry per seed ({self.num_seeds}), got {len(per_seed)}")
        pairs = [(cb, agent) for agent, cbs in zip(self.agents, per_seed) for cb in cbs]
        end = self.agents[0].num_timesteps + int(total_timesteps)
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(total_timesteps), unit="step", dynamic_ncols=True, mininterval=1.0)
        for cb, agent in pairs:
            cb.on_training_start(agent)
        try:
            while self.agents[0].num_timesteps < end:
                episode_over = self.step()
                keep_going = True
                for cb, agent in pairs:
                    keep_going = cb.on_step(agent) is not False and keep_going
                if all(episode_over):
                    for cb, agent in pairs:
                        keep_going = cb.on_episode_end(agent) is not False and keep_going
                if bar is not None and self.agents[0].num_timesteps % 100 == 0:
                    bar.update(100)
                if not keep_going:
                    break
        finally:
            if bar is not None:
                bar.close()
        for cb, agent in pairs:
            cb.on_training_end(agent)
        return self

    def step(self) -> list[bool]:
        """One env step of every seed, then the updates they are due; True where an episode ended."""
        for agent in self.agents:
            if agent._obs is None:
                agent._start_episode()  # may start a task: empty replay, new (per-seed) optimizer
        lead = self.agents[0]
        if any(a.task_steps != lead.task_steps or a.current_task != lead.current_task for a in self.agents):
            raise RuntimeError("the seeds left lockstep (their envs change task at different steps); "
                               "seed batching needs envs with the same task budget")
        if lead.current_task != self._task_of_optimizer:  # CW: the optimizer reset at every task start
            if self.config.reset_optimizer_on_task_change:
                self.optimizer = reset_adam(self.optimizer, self._make_optimizer(), self.config.optimizer_reset)
            self._task_of_optimizer = lead.current_task
        if self.recurrent or lead.task_steps >= self.config.random_steps:
            self._act()
        episode_over = [agent._env_step() for agent in self.agents]
        rounds = {agent._requested_updates for agent in self.agents}
        if len(rounds) != 1:
            raise RuntimeError(f"the seeds asked for different numbers of updates {sorted(rounds)}")
        for agent in self.agents:
            agent._requested_updates = 0
        for _ in range(rounds.pop()):
            self.gradient_step()
        return episode_over

    @torch.no_grad()
    def _act(self) -> None:
        """One stochastic action per seed (noise from each seed's generator), as ``SAC._policy_action``."""
        agents, device = self.agents, self.device
        obs = torch.as_tensor(np.stack([a._obs for a in agents]), device=device)
        obs = agents[0].net_obs(obs).reshape(self.num_seeds, 1, 1, -1).contiguous()
        task = torch.tensor([a.current_task for a in agents], device=device).view(-1, 1, 1)
        params = {k[len("actor."):]: self.params[k].detach() for k in self._actor_keys}
        if self.recurrent:
            hidden = torch.stack([a._hidden for a in agents])
            prev_action = torch.stack([a._prev_action for a in agents])
            prev_reward = torch.stack([a._prev_reward for a in agents])
            mean, log_std, hidden = vmap(self._run_actor)(params, obs, task, hidden, prev_action, prev_reward)
        else:
            mean, log_std, _ = vmap(self._run_actor)(params, obs, task)
        noise = torch.stack([a._noise(mean[0]) for a in agents])
        action, _ = squashed_sample(mean, log_std, noise)
        actions = action.view(self.num_seeds, -1).cpu().numpy()
        for k, agent in enumerate(agents):
            agent._pending_action = actions[k]
            if self.recurrent:
                agent._hidden = hidden[k]

    def _run_actor(self, params, obs, task, hidden=None, prev_action=None, prev_reward=None):
        mean, log_std, state = self._actor(obs, prev_action, prev_reward, task, hidden, params=params)
        return mean, log_std, (obs.new_zeros(()) if state is None else state)

    def _seed_loss(self, params: dict[str, Tensor], fields: dict[str, Tensor], noises: tuple[Tensor, ...]):
        return functional_call(self._loss, params, (fields, noises))

    def sample(self) -> tuple[dict[str, Tensor], tuple[Tensor, ...]]:
        """Every seed's batch from its own replay and its loss noise from its own generator, stacked."""
        batches = [agent.replay.sample(self.config.batch_size) for agent in self.agents]
        if self.recurrent:  # seeds drew windows and prefixes of different lengths: pad to stack them
            steps, prefix = max(b.steps for b in batches), max(b.prefix_steps for b in batches)
            batches = [b.padded(steps, prefix) for b in batches]
        fields = {name: torch.stack([getattr(b, name) for b in batches]).to(self.device, non_blocking=True)
                  for name in _BATCH_FIELDS if getattr(batches[0], name) is not None}
        first = batches[0]
        shapes = noise_shapes(self.recurrent, first.batch_size, first.steps, first.action.shape[-1])
        noises = tuple(torch.stack([a._noise(torch.empty(shape, device=self.device)) for a in self.agents])
                       for shape in shapes)
        return fields, noises

    def compute_losses(self, fields: dict[str, Tensor], noises: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """``SAC.compute_loss`` of every seed on its batch: losses ``[K]``, metrics ``[K, len(SAC.METRICS)]``."""
        return self._batched_loss({**self.params, **self.target_params}, fields, noises)

    def gradient_step(self) -> None:
        """One update of every seed: SAC.gradient_step's backward, clipping, Adam and polyak steps."""
        fields, noises = self.sample()
        losses, metrics = self.compute_losses(fields, noises)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # seeds share no weights: each gets the gradient of its own loss
        if self.config.clip_grad_norm is not None:
            actor = [v for k, v in self.params.items() if k.startswith("actor.")]
            clip_per_seed(actor, self.config.clip_grad_norm)
            clip_per_seed(self._critic, self.config.clip_grad_norm)
        lead = self.agents[0]
        check_update(torch.cat([losses.detach()[:, None], metrics.detach()], 1), ["loss", *SAC.METRICS],
                     self.params.items(), f"update {lead.num_updates + 1} at env step {lead.num_timesteps} "
                     f"(task {lead.current_task}, seeds {[a.seed for a in self.agents]})")
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._critic, 1.0 - self.config.polyak)
        metrics = metrics.detach()
        for k, agent in enumerate(self.agents):  # what SAC.gradient_step records, per seed
            agent._metric_sums = metrics[k] if agent._metric_sums is None else agent._metric_sums + metrics[k]
            agent._metric_names = list(SAC.METRICS)
            agent.num_updates += 1
            agent._metric_count += 1


@torch.no_grad()
def clip_per_seed(params: list[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each seed's slice of stacked parameters separately."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()  # [K]
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


__all__ = ["BatchedSAC", "SeedAgent", "parse_seeds", "check_protection", "noise_shapes", "SUPPORTED_PROTECTIONS"]
