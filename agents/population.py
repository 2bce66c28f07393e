"""Populations: K runs of one method trained together in one process, weights stacked.

Small continual-RL networks are overhead-bound on a CPU (an update of a small GRU SAC is
thousands of microsecond ops) and launch-bound on a GPU. A population runs the SAC update
of all its members as one pass of batched kernels: every weight is stacked on a leading
member axis (``[K, out, in]``), the batches of all members are folded member-major into the
batch axis, and :meth:`agents.sac.SAC.compute_loss` itself runs once over all of them
through the member-aware kernels of :mod:`agents.nets.stacked` (``baddbmm`` for every layer, one
:class:`~agents.nets.rnn_kernels.GRUSequence` or one minGRU scan for every cell of every member).
There is no ``vmap`` and no Python loop over members in the update.

Each member is a full :class:`~agents.sac.SAC` (:class:`Member`): its own env, replay,
generators, counters, episode log, protection object and run directory. Its modules hold
*views* of its slice of the stacked weights, so its ``act`` (evaluation), ``save``,
checkpoints and its protection read and write the live weights. So:

- **member k equals the single run of seed k**: the same initialisation (each member builds
  its networks as ``SAC(seed=k)`` does, then they are stacked), its noise from its own
  generator in the single run's order and shapes, its own replay sample, one Adam over the
  stacked tensors (Adam is elementwise: it equals K Adams), gradient clipping per member;
  what differs is the summation order of batched matrix products (tests state the tolerance);
- **protection**: the members' hooks run on their views. ``loss`` terms are summed over the
  members and differentiated once, into the stacked gradients; ``after_backward`` sees (and
  edits) the member's slice of the stacked gradient; ``after_step`` edits weights and
  optimizer moments in place (a member's optimizer state is a view of the stacked one);
  the weight penalties of L2, EWC, online EWC and MAS run batched over all members
  (:class:`StackedPenalty`). HNET and VCL (which supply the networks' weights for every
  update) and PackNet (which retrains with updates of its own inside ``on_task_end``) are
  refused with the reason (:data:`UNSTACKED_METHODS`);
- **lockstep**: all members share the spaces and ``steps_per_task`` (so task changes and
  update rounds fall on the same step); a checkpoint is taken only where every member is
  between episodes (always at a task end).

Members may differ by seed, by env (same spaces and budget: e.g. the cells of a study grid)
and by their protection's scalar coefficients (one protection object each).

Example:
    >>> import gymnasium as gym, contenv
    >>> envs = [gym.make("contenv/Sequence-v0", tasks=["reach-v3"], steps_per_task=30, horizon=10).unwrapped
    ...         for _ in range(2)]
    >>> config = SACConfig(hidden_sizes=(8,), batch_size=4, random_steps=5, update_after=10, update_every=10)
    >>> population = Population(envs, config, seeds=[0, 1])
    >>> _ = population.learn(30)
    >>> [m.num_timesteps for m in population.members], population.params["log_alpha"].shape
    ([30, 30], torch.Size([2, 1]))
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from agents.training.finite import NonFiniteError, check_update
from agents.nets.networks import Actor, TwinCritic, squashed_sample
from agents.protection import HOOKS, Protection, defines, make_protection
from agents.replay import Batch
from agents.sac import SAC, Callback, SACConfig, _callbacks, drive, reset_adam
from agents.nets.stacked import clip_per_member, member_rows, per_member_mean

# Methods a population cannot run yet, and why (the stacked update runs on the stacked weights
# only, and a member's own updates are deferred to the population's lockstep rounds).
UNSTACKED_METHODS = {
    "hnet": "its hypernetwork generates the actor's (and critics') weights for every update",
    "vcl": "it samples the actor's weights from its posterior for every update",
    "packnet": "it retrains inside on_task_end with updates of its own, between optimizer resets",
}
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


def method_names(protection: Any) -> list[str]:
    """The registered names of a protection (its parts, for a composite)."""
    if isinstance(protection, str):
        return [part for part in protection.split("+") if part] if "+" in protection else [protection]
    parts = getattr(protection, "members", None)
    if isinstance(parts, list):
        return [name for part in parts for name in method_names(part)]
    return [getattr(protection, "name", type(protection).__name__)]


def check_protection(protection: Any) -> None:
    """A clear error for a method that a population cannot train (see the module docstring).

    Example:
        >>> check_protection("ewc")
        >>> check_protection("hnet")
        Traceback (most recent call last):
        ...
        ValueError: a population (several seeds in one process) cannot train 'hnet' yet: its hypernetwork generates the actor's (and critics') weights for every update; train it one seed per process (--seed N, or contenv sweep); populations train: finetune, l2, ewc, online-ewc, mas, si, replay, agem, clonex, cbp, shrink-perturb, l2-init, redo, reset-last and their compositions
    """
    from agents.protection.registry import PROTECTIONS

    for name in method_names(protection):
        if name in UNSTACKED_METHODS:
            allowed = [n for n in PROTECTIONS if n not in UNSTACKED_METHODS and n != "composite"]
            raise ValueError(f"a population (several seeds in one process) cannot train {name!r} yet: "
                             f"{UNSTACKED_METHODS[name]}; train it one seed per process (--seed N, or contenv sweep); "
                             f"populations train: {', '.join(allowed)} and their compositions")


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can get (``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def replay_bytes(agent: SAC) -> int:
    """What an agent's replay holds once full (its arrays are allocated at full size, lazily)."""
    return sum(a.nbytes for a in vars(agent.replay).values() if isinstance(a, np.ndarray))


def check_memory(first: SAC, size: int, available: int | None = None) -> None:
    """Refuse a population whose replays would not fit in memory, with the estimate.

    Example:
        >>> from agents.sac import SpaceSpec
        >>> agent = SAC(config=SACConfig(hidden_sizes=(4,), replay_size=1000), spec=SpaceSpec(3, 3, 1, 2, False))
        >>> check_memory(agent, 4, available=10**9)
        >>> check_memory(agent, 10**6, available=10**9)
        Traceback (most recent call last):
        ...
        MemoryError: a population of 1000000 members needs about 45776.4 MiB for its replays (46.9 KiB each: 1000 steps), but 953.7 MiB are available: fewer members (--population-size) or a smaller --replay-size
    """
    available = available_memory() if available is None else available
    each = replay_bytes(first)
    if available is None or each * size <= 0.9 * available:
        return
    raise MemoryError(f"a population of {size} members needs about {each * size / 2**20:.1f} MiB for its replays "
                      f"({each / 2**10:.1f} KiB each: {first.replay.capacity} steps), but "
                      f"{available / 2**20:.1f} MiB are available: fewer members (--population-size) or a smaller "
                      "--replay-size")


class Member(SAC):
    """One member of a :class:`Population`: a SAC whose weights are views of the stacked
    tensors and whose actions and updates the population computes for all members at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.population: Population | None = None
        self.index = 0
        self._pending_action: np.ndarray | None = None
        self._requested_updates = 0

    def _policy_action(self, obs: np.ndarray, task: int | None = None) -> np.ndarray:
        if task is not None:  # a protection's exploration policy (ClonEx): this member alone
            return super()._policy_action(obs, task)
        action, self._pending_action = self._pending_action, None  # computed for all members by the population
        if action is None:
            raise RuntimeError("a population member acts only through its Population")
        return action

    def gradient_step(self) -> None:
        self._requested_updates += 1  # the population runs the updates of all members together

    def reset_optimizer(self, mode: str | None = None) -> None:
        if self.population is None:  # still being built
            return super().reset_optimizer(mode)
        self.population.reset_member_optimizer(self.index, mode or self.config.optimizer_reset)

    def training_state(self) -> dict[str, Any]:
        state = super().training_state()
        state["optimizer"] = self.population.member_optimizer_state(self.index)  # its slice of the shared Adam
        return state


class _StackedLoss:
    """What :meth:`SAC.compute_loss` reads from its agent, for all members at once: networks
    whose parameters are the stacked tensors, the per-member mean and entropy coefficients,
    and each member's noise from its own generator."""

    def __init__(self, population: "Population") -> None:
        first = population.members[0]
        self.population = population
        self.config, self.recurrent, self.net_dim = first.config, first.recurrent, first.net_dim
        self.target_entropy, self.device, self.current_task = first.target_entropy, first.device, 0
        self._hooks = {hook: False for hook in HOOKS}
        self.actor, self.critic = Actor(first.net_config), TwinCritic(first.net_config)
        self.target_critic = TwinCritic(first.net_config)
        modules = {"actor": self.actor, "critic": self.critic, "target_critic": self.target_critic}
        for key, tensor in {**population.params, **population.target_params}.items():
            prefix, _, name = key.partition(".")
            if prefix in modules:
                owner, _, leaf = name.rpartition(".")
                setattr(modules[prefix].get_submodule(owner), leaf, nn.Parameter(tensor, requires_grad=tensor.requires_grad))
        # The modules hold the very stacked tensors (nn.Parameter of a leaf shares it): re-point the dicts.
        for key in population.params:
            prefix, _, name = key.partition(".")
            if prefix in modules:
                population.params[key] = modules[prefix].get_parameter(name)
        for key in population.target_params:
            population.target_params[key] = self.target_critic.get_parameter(key.partition(".")[2])
        self.log_alpha = population.params["log_alpha"]
        self.rows_per_member = 0
        self._noise_shapes: list[list[tuple[int, ...]]] = []

    net_obs = SAC.net_obs
    _window_states = SAC._window_states

    def actor_params(self, task: int) -> None:
        return None

    def critic_params(self, task: int) -> None:
        return None

    def _mean(self, x: Tensor, mask: Tensor) -> Tensor:
        return per_member_mean(x, mask, self.population.size)

    def _log_alpha_of(self, task: Tensor) -> Tensor:
        return self.log_alpha[self._rows, task]

    def _noise(self, like: Tensor) -> Tensor:
        """Each member's draw from its own generator, in the shape its single run would draw
        (its own window length), padded to the population's."""
        shapes = self._noise_shapes.pop(0)
        draws = []
        for member, shape in zip(self.population.members, shapes):
            noise = member._noise(like.new_empty(shape))
            if noise.shape[1] < like.shape[1]:
                noise = torch.cat([noise, noise.new_zeros(shape[0], like.shape[1] - shape[1], *shape[2:])], dim=1)
            draws.append(noise)
        return draws[0] if len(draws) == 1 else torch.cat(draws)

    def compute(self, batch: Batch, noise_shapes: list[list[tuple[int, ...]]], rows_per_member: int):
        key = (self.population.size, rows_per_member)
        if getattr(self, "_rows_key", None) != key:  # the same every update: made once
            self._rows, self._rows_key = member_rows(self.population.size, rows_per_member, self.device), key
        self._noise_shapes = noise_shapes
        loss, metrics = SAC.compute_loss(self, batch, include_protection=False)
        if self._noise_shapes:
            raise RuntimeError("compute_loss drew less noise than the population prepared")
        return loss, torch.stack(list(metrics.values()), dim=1)


class StackedPenalty:
    """The quadratic weight penalty of L2, EWC, online EWC and MAS for all members at once:
    ``sum_k c_k sum_i w_ki (theta_ki - theta*_ki)^2`` over stacked anchors and importances,
    rebuilt whenever a member consolidates (at task ends). Equal to the members' own
    :meth:`~agents.protection.regulariser.WeightRegulariser.loss`, summed."""

    def __init__(self, population: "Population") -> None:
        self.population = population
        self._key: tuple | None = None
        self._terms: list[tuple[Tensor, Tensor, Tensor]] = []

    @staticmethod
    def applies(protections: list[Any]) -> bool:
        from agents.protection.regulariser import WeightRegulariser

        first = protections[0]
        return (isinstance(first, WeightRegulariser) and all(type(p) is type(first) for p in protections)
                and all(type(p).loss is WeightRegulariser.loss for p in protections))

    def losses(self) -> Tensor | None:
        """``[K]``: each member's penalty times its coefficient; None before any anchor."""
        protections = [m.protection for m in self.population.members]
        key = tuple(tuple(p.consolidated) for p in protections)
        if key != self._key:
            self._build(protections)
            self._key = key
        if not self._terms:
            return None
        penalty = sum((importance * (weight - anchor).square()).flatten(1).sum(1)
                      for weight, anchor, importance in self._terms)
        return self._coefficients * penalty

    def _build(self, protections: list[Any]) -> None:
        if not all(p.anchor for p in protections):
            if any(p.anchor for p in protections):
                raise RuntimeError("the members of a population consolidated at different tasks")
            self._terms = []
            return
        params = self.population.params
        self._coefficients = torch.tensor([p.coefficient for p in protections], device=self.population.device)
        self._terms = []
        for name in protections[0].anchor:
            anchor = torch.stack([p.anchor[name] for p in protections])
            importance = torch.stack([p.importance[name] for p in protections])
            self._terms.append((params["actor." + name], anchor, importance))


class Population:
    """Train ``len(seeds)`` SAC runs of one configuration and method together (module docstring).

    Args:
        envs: one training env per member (same spaces and task budget).
        config: the agent configuration shared by all members.
        seeds: one seed per env; seed ``s`` initialises and draws exactly as ``SAC(seed=s)``.
        device: where the stacked weights and the updates live.
        protection: one method name for all, or one protection object per member (the same
            method; coefficients may differ).
    """

    def __init__(self, envs: Sequence[gym.Env], config: SACConfig | None = None, seeds: Sequence[int] = (0,),
                 device: torch.device | str = "cpu", protection: Any = "finetune") -> None:
        seeds = parse_seeds(list(seeds))
        if len(envs) != len(seeds):
            raise ValueError(f"a population needs one env per seed: {len(envs)} envs, {len(seeds)} seeds")
        protections = self._protections(protection, len(seeds))
        self.config = config = config or SACConfig()
        self.device = torch.device(device)
        first = Member(envs[0], config, protection=protections[0], seed=seeds[0], device=self.device)
        check_memory(first, len(seeds))  # before the other members allocate their replays
        self.members = [first] + [Member(env, config, protection=p, seed=s, device=self.device)
                                  for env, p, s in zip(envs[1:], protections[1:], seeds[1:])]
        for member in self.members[1:]:
            if member.spec != first.spec:
                raise ValueError(f"all members of a population need the same spaces: seed {member.seed} has "
                                 f"{member.spec}, seed {first.seed} {first.spec}")
        budgets = {getattr(m.env.unwrapped, "steps_per_task", None) for m in self.members if m.env is not None}
        if len(budgets) > 1:
            raise ValueError(f"all members of a population need the same steps_per_task (they update in lockstep), "
                             f"got {sorted(budgets, key=str)}")
        for member in self.members:
            if member._hooks["trainable_parameters"] and member.protection.trainable_parameters(member):
                raise ValueError(f"{method_names(member.protection)}: the method adds trainable tensors, which a "
                                 "population's stacked optimizer does not hold")
            member._owes_task_end, member._hooks["on_task_end"] = member._hooks["on_task_end"], False
        self.recurrent = first.recurrent
        self.failed: list[Member] = []  # members stopped by a non-finite update (their error in .failure)
        self._pending_reset: set[int] = set()
        self._build()
        self.optimizer = self._make_optimizer()

    def _build(self) -> None:
        """Stack the members' weights and set up what reads them (at the start, and after
        members are stopped)."""
        self.size = len(self.members)
        self.params, self.target_params = self._stack()
        self._loss = _StackedLoss(self)
        for index, member in enumerate(self.members):
            member.population, member.index = self, index
        self._actor_keys = [k for k in self.params if k.startswith("actor.")]
        self._actor_params = {k[len("actor."):]: self.params[k] for k in self._actor_keys}
        self._trainable = list(self.params.values())  # actor, critic, log_alpha: SAC.trainable_parameters' order
        self._actor = [v for k, v in self.params.items() if k.startswith("actor.")]
        self._critic = [v for k, v in self.params.items() if k.startswith("critic.")]
        self._target = [self.target_params["target_" + k] for k in self.params if k.startswith("critic.")]
        protections = [m.protection for m in self.members]
        self._hooks = {hook: any(defines(p, hook) for p in protections) for hook in HOOKS}
        self._hooks["on_task_end"] = any(m._owes_task_end for m in self.members)
        self._supplies_weights = self._hooks["task_parameters"] or self._hooks["critic_parameters"]
        self._penalty = StackedPenalty(self) if self._hooks["loss"] and StackedPenalty.applies(protections) else None
        self._linked = False  # members' optimizer states point at the stacked one

    @staticmethod
    def _protections(protection: Any, size: int) -> list[Protection]:
        if isinstance(protection, str):
            check_protection(protection)  # before building it: a combination error would hide the reason
        if isinstance(protection, (list, tuple)):
            if len(protection) != size:
                raise ValueError(f"a population of {size} members needs {size} protection objects, got {len(protection)}")
            methods = list(protection)
        elif isinstance(protection, (str, type(None))):
            methods = [make_protection(protection or "finetune") for _ in range(size)]
        elif size > 1:
            raise ValueError("a population shares no protection object between members: pass a method name "
                             "or one object per member")
        else:
            methods = [protection]
        names = {getattr(m, "name", type(m).__name__) for m in methods}
        if len(names) > 1:
            raise ValueError(f"the members of a population train one method, got {sorted(names)}")
        check_protection(methods[0])
        return methods

    # ------------------------------------------------------------------ stacking
    def _stack(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Stack every member's weights; then point each member's modules at its slice."""
        modules = {"actor": lambda a: a.actor, "critic": lambda a: a.critic, "target_critic": lambda a: a.target_critic}
        params: dict[str, Tensor] = {}
        target: dict[str, Tensor] = {}
        for prefix, get in modules.items():
            for name, _ in get(self.members[0]).named_parameters():
                stacked = torch.stack([get(a).get_parameter(name).detach() for a in self.members]).contiguous()
                key = f"{prefix}.{name}"
                if prefix == "target_critic":
                    target[key] = stacked
                else:
                    params[key] = stacked.requires_grad_(True)
        params["log_alpha"] = torch.stack([a.log_alpha.detach() for a in self.members]).requires_grad_(True)
        everything = {**params, **target}
        for index, member in enumerate(self.members):
            for key, stacked in everything.items():
                prefix, _, name = key.partition(".")
                # A leaf of its own that shares the stacked storage: the member's hooks can differentiate it.
                view = nn.Parameter(stacked.detach()[index], requires_grad=prefix != "target_critic")
                if prefix == "log_alpha":
                    member.log_alpha = view
                    continue
                owner, _, leaf = name.rpartition(".")
                setattr(modules[prefix](member).get_submodule(owner), leaf, view)  # '' is the module itself
            member._critic_params = list(member.critic.parameters())
            member._target_params = list(member.target_critic.parameters())
            member.optimizer = SAC._make_optimizer(member)  # over the views (its state is linked to the stacked one)
        return params, target

    def member_views(self, index: int) -> list[Tensor]:
        """Member ``index``'s views, in the order of the stacked trainable tensors."""
        return self.members[index].trainable_parameters()[: len(self._trainable)]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        try:  # the fused kernel is ~3x faster on CPU and GPU (as in SAC._make_optimizer)
            return torch.optim.Adam(self._trainable, lr=cfg.lr, eps=cfg.adam_eps, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(self._trainable, lr=cfg.lr, eps=cfg.adam_eps)

    def _link_optimizer_states(self) -> None:
        """Make each member's optimizer state a view of its slice of the stacked Adam's, so a
        method that edits moments in place (CBP, ReDo, reset-last) edits the real ones."""
        if self._linked or not self.optimizer.state:
            return
        for index, member in enumerate(self.members):
            member.optimizer = SAC._make_optimizer(member)
            for stacked, view in zip(self._trainable, self.member_views(index)):
                state = self.optimizer.state.get(stacked)
                if state:
                    member.optimizer.state[view] = {k: (v if k == "step" else v[index]) for k, v in state.items()}
        self._linked = True

    def reset_member_optimizer(self, index: int, mode: str) -> None:
        """A member's optimizer reset (its task start, PackNet's retraining): ``"moments"``
        zeroes its slice of Adam's moments now; ``"fresh"`` needs every member at once (they
        share the step count), which lockstep gives, and happens before the next update."""
        if mode == "moments":
            with torch.no_grad():
                for stacked in self._trainable:
                    for key, value in self.optimizer.state.get(stacked, {}).items():
                        if key != "step":
                            value[index].zero_()
        else:
            self._pending_reset.add(index)

    def member_optimizer_state(self, index: int) -> dict[str, Any]:
        """Member ``index``'s slice of the shared Adam, shaped like a single run's optimizer state."""
        state = self.optimizer.state_dict()
        sliced = {i: {k: (v if k == "step" else v[index]).clone() for k, v in s.items()} for i, s in state["state"].items()}
        return {"state": sliced, "param_groups": state["param_groups"]}

    def load_optimizer_from_members(self) -> None:
        """Rebuild the shared Adam from the members' optimizers (after each loaded a checkpoint)."""
        states = [m.optimizer.state_dict() for m in self.members]
        self.optimizer = self._make_optimizer()
        shared = self.optimizer.state_dict()
        shared["state"] = {i: {k: (v if k == "step" else torch.stack([s["state"][i][k] for s in states]))
                               for k, v in entry.items()} for i, entry in states[0]["state"].items()}
        self.optimizer.load_state_dict(shared)
        self._linked = False
        self._link_optimizer_states()

    # ------------------------------------------------------------------ training loop
    @property
    def num_timesteps(self) -> int:
        """Env steps each (live) member has taken: they run in lockstep."""
        return self.members[0].num_timesteps

    def learn(self, total_timesteps: int, callbacks: Sequence[Callback | Iterable | None] | None = None,
              progress_bar: bool = False) -> "Population":
        """Train every member for ``total_timesteps`` more env steps.

        ``callbacks[k]`` (a Callback, a function or a list, as for :meth:`SAC.learn`) sees
        member ``k``; ``on_episode_end`` is called only at steps where every member is
        between episodes (so the checkpoints of all members share one step).
        """
        per_member = [_callbacks(c) for c in (callbacks or [None] * self.size)]
        if len(per_member) != self.size:
            raise ValueError(f"need one callback entry per member ({self.size}), got {len(per_member)}")
        pairs = [(cb, member) for member, cbs in zip(self.members, per_member) for cb in cbs]

        def live_pairs() -> list[tuple[Callback, Member]]:  # stopped members get no more calls (see failed)
            live = {id(m) for m in self.members}
            return [(cb, m) for cb, m in pairs if id(m) in live]

        drive(self, int(total_timesteps), lambda: all(self.step()), live_pairs, progress_bar)
        return self

    def step(self) -> list[bool]:
        """One env step of every member, then the updates they are due; True where an episode ended."""
        for member in self.members:
            if member._obs is None:
                member._start_episode()  # may start a task: hooks, empty replay, optimizer reset
        lead = self.members[0]
        if any(m.task_steps != lead.task_steps or m.current_task != lead.current_task for m in self.members):
            raise RuntimeError("the members left lockstep (their envs change task at different steps); "
                               "a population needs envs with the same task budget")
        self._apply_fresh_resets()
        if self.recurrent or lead.task_steps >= self.config.random_steps:
            self._act()
        episode_over = [member._env_step() for member in self.members]
        rounds = {member._requested_updates for member in self.members}
        if len(rounds) != 1:
            raise RuntimeError(f"the members asked for different numbers of updates {sorted(rounds)}")
        for member in self.members:
            member._requested_updates = 0
        for _ in range(rounds.pop()):
            self.gradient_step()
        for member in self.members:  # as SAC._env_step: after the step's updates
            if member.task_ended and member._owes_task_end:
                member.protection.on_task_end(member, member.current_task)
        return episode_over

    def _apply_fresh_resets(self) -> None:
        if not self._pending_reset:
            return
        if len(self._pending_reset) != self.size:
            raise RuntimeError(f"members {sorted(self._pending_reset)} asked for a fresh Adam alone; the members of a "
                               "population share Adam's step count, so they reset together")
        self.optimizer = reset_adam(self.optimizer, self._make_optimizer(), "fresh")
        self._pending_reset.clear()
        self._linked = False

    @torch.no_grad()
    def _act(self) -> None:
        """One stochastic action per member (noise from each member's generator), as ``SAC._policy_action``."""
        members, device = self.members, self.device
        obs = torch.as_tensor(np.stack([m._obs for m in members]), device=device)
        obs = members[0].net_obs(obs).reshape(self.size, 1, -1).contiguous()
        task = torch.tensor([m.current_task for m in members], device=device).view(-1, 1)
        if self.recurrent:
            hidden = torch.cat([m._hidden for m in members])
            prev_action = torch.cat([m._prev_action for m in members])
            prev_reward = torch.cat([m._prev_reward for m in members])
            mean, log_std, hidden = self._loss.actor(obs, prev_action, prev_reward, task, hidden, params=self._actor_params)
        else:
            mean, log_std, _ = self._loss.actor(obs, task=task, params=self._actor_params)
        # A member exploring with an old task's policy (ClonEx) acts on its own: it draws no noise here.
        own = [m.task_steps < self.config.random_steps and m._explore_task is not None for m in members]
        noise = torch.cat([torch.zeros_like(mean[:1]) if alone else m._noise(mean[:1]) for m, alone in zip(members, own)])
        action, _ = squashed_sample(mean, log_std, noise)
        actions = action.view(self.size, -1).cpu().numpy()
        for k, member in enumerate(members):
            if own[k]:
                continue
            member._pending_action = actions[k]
            if self.recurrent:
                member._hidden = hidden[k : k + 1]

    def sample(self) -> tuple[Batch, list[list[tuple[int, ...]]], int]:
        """Every member's batch from its own replay, folded member-major into one batch, and the
        shapes of the noise each member's single run would draw for it."""
        batches = [member.replay.sample(self.config.batch_size, self.device) for member in self.members]
        self._member_batches = batches  # each member's own (unpadded) batch, for its protection's hooks
        first = batches[0]
        action_dim = first.action.shape[-1]
        if self.recurrent:  # one pass over all T + 1 observations
            shapes = [[(b.batch_size, b.steps + 1, action_dim)] for b in batches]
            steps, prefix = max(b.steps for b in batches), max(b.prefix_steps for b in batches)
            batches = [b if (b.steps, b.prefix_steps) == (steps, prefix) else b.padded(steps, prefix) for b in batches]
        else:  # current, then next actions
            shapes = [[(b.batch_size, b.steps, action_dim)] * 2 for b in batches]
        noise_shapes = [list(per_draw) for per_draw in zip(*shapes)]
        if self.size == 1:  # nothing to fold (a copy of every field saved)
            return first, noise_shapes, first.batch_size
        fields = {name: torch.cat([getattr(b, name) for b in batches])
                  for name in _BATCH_FIELDS if getattr(first, name) is not None}
        return Batch(**fields), noise_shapes, first.batch_size

    def compute_losses(self, batch: Batch, noise_shapes, rows_per_member: int) -> tuple[Tensor, Tensor]:
        """``SAC.compute_loss`` of every member on its batch: losses ``[K]``, metrics ``[K, len(SAC.METRICS)]``."""
        task = self._loss.current_task = self.members[0].current_task
        if self._supplies_weights and any(m.actor_params(task) is not None or m.critic_params(task) is not None
                                          for m in self.members):
            raise RuntimeError(f"a member's protection supplies the networks' weights for task {task}, which the "
                               "stacked update cannot use (agents.population.UNSTACKED_METHODS)")
        return self._loss.compute(batch, noise_shapes, rows_per_member)

    def protection_losses(self) -> Tensor | None:
        """``[K]``: every member's protection loss (batched where :class:`StackedPenalty` applies,
        else each member's hook on its views); None when no member has one yet."""
        if not self._hooks["loss"]:
            return None
        if self._penalty is not None:
            return self._penalty.losses()
        terms = [m.protection.loss(m, batch) if m._hooks["loss"] else None
                 for m, batch in zip(self.members, self._member_batches)]
        if all(t is None for t in terms):
            return None
        zero = torch.zeros((), device=self.device)
        return torch.stack([zero if t is None else t.reshape(()) for t in terms])

    def gradient_step(self) -> None:
        """One update of every member: SAC.gradient_step's backward, protection, clipping, Adam and polyak."""
        self._apply_fresh_resets()
        batch, noise_shapes, rows = self.sample()
        losses, metrics = self.compute_losses(batch, noise_shapes, rows)
        protection = self.protection_losses()
        if protection is not None:
            losses = losses + protection
            metrics = torch.cat([metrics[:, :-1], protection.detach()[:, None]], dim=1)  # protection_loss is last
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # members share no weights: each gets the gradient of its own loss
        if protection is not None and self._penalty is None:
            self._gather_member_gradients()  # the hooks' terms reached the members' views
        if self._hooks["after_backward"]:
            self._run_member_hook("after_backward")
        if self.config.clip_grad_norm is not None:
            clip_per_member(self._actor, self.config.clip_grad_norm)
            clip_per_member(self._critic, self.config.clip_grad_norm)
        terms = torch.cat([losses.detach()[:, None], metrics.detach()], 1)
        if not self._all_finite(terms):
            terms, metrics = self._stop_nonfinite_members(terms, metrics)
        self.optimizer.step()
        self._link_optimizer_states()
        if self._hooks["after_step"]:
            self._run_member_hook("after_step")
        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._critic, 1.0 - self.config.polyak)
        metrics = metrics.detach()
        for k, member in enumerate(self.members):  # what SAC.gradient_step records, per member
            member._metric_sums = metrics[k] if member._metric_sums is None else member._metric_sums + metrics[k]
            member._metric_names = list(SAC.METRICS)
            member.num_updates += 1
            member._metric_count += 1

    def _all_finite(self, terms: Tensor) -> bool:
        """Every loss term and gradient finite: one reduction and one sync, as SAC's check."""
        grads = [p.grad for p in self._trainable if p.grad is not None]
        norms = torch._foreach_norm(grads) if grads else []
        values = torch.cat([terms.reshape(-1).float(), *(n.reshape(1).float() for n in norms)])
        return bool(torch.isfinite(values).all())

    def _stop_nonfinite_members(self, terms: Tensor, metrics: Tensor) -> tuple[Tensor, Tensor]:
        """Stop every member whose update is not finite, with the error that names it (its weights
        are left as they were, its last checkpoint is its last good state); the others go on with
        this very update. If no member is left, the error is raised."""
        bad = []
        for k, member in enumerate(self.members):
            named = [(name, view) for (name, _), view in zip(member.named_trainables(), self.member_views(k))]
            for (_, view), stacked in zip(named, self._trainable):
                view.grad = None if stacked.grad is None else stacked.grad[k]
            try:
                check_update(terms[k], ["loss", *SAC.METRICS], named,
                             f"seed {member.seed}: update {member.num_updates + 1} at env step {member.num_timesteps} "
                             f"(task {member.current_task})")
            except NonFiniteError as err:
                member.failure = err
                bad.append(k)
            finally:
                for _, view in named:
                    view.grad = None
        if len(bad) == self.size:
            raise self.members[0].failure
        keep = [k for k in range(self.size) if k not in bad]
        for k in bad:
            self.failed.append(self.members[k])
            warnings.warn(f"population: {self.members[k].failure}", stacklevel=2)
        self._drop(keep)
        return terms[keep], metrics[keep]

    def _drop(self, keep: list[int]) -> None:
        """Keep only the members ``keep`` (indices), with their weights, gradients and Adam state."""
        old_trainable = list(self._trainable)
        old_state = [self.optimizer.state.get(p, {}) for p in old_trainable]
        grads = [None if p.grad is None else p.grad[keep].clone() for p in old_trainable]
        self.members = [self.members[k] for k in keep]
        self._build()  # restacks from the members' views, which still hold the live weights
        self.optimizer = self._make_optimizer()
        for p, state, grad in zip(self._trainable, old_state, grads):
            p.grad = grad
            if state:
                self.optimizer.state[p] = {key: (v.clone() if key == "step" else v[keep].clone())
                                           for key, v in state.items()}
        self._link_optimizer_states()

    @torch.no_grad()
    def _gather_member_gradients(self) -> None:
        """Move the gradients that the members' hooks put on their views into the stacked ones."""
        for k in range(self.size):
            for stacked, view in zip(self._trainable, self.member_views(k)):
                if view.grad is None:
                    continue
                if stacked.grad is None:
                    stacked.grad = torch.zeros_like(stacked)
                stacked.grad[k].add_(view.grad)
                view.grad = None

    def _run_member_hook(self, hook: str) -> None:
        """Run a hook of every member on its views; its gradients are views of the stacked ones."""
        for k, member in enumerate(self.members):
            if not member._hooks[hook]:
                continue
            views = self.member_views(k)
            for stacked, view in zip(self._trainable, views):
                view.grad = None if stacked.grad is None else stacked.grad[k]
            getattr(member.protection, hook)(member)
            with torch.no_grad():
                for stacked, view in zip(self._trainable, views):
                    if view.grad is not None and stacked.grad is not None \
                            and view.grad.data_ptr() != stacked.grad[k].data_ptr():
                        stacked.grad[k].copy_(view.grad)  # the hook replaced the gradient tensor
                    view.grad = None


__all__ = ["Population", "Member", "StackedPenalty", "parse_seeds", "check_protection", "method_names",
           "UNSTACKED_METHODS"]
