"""Replay buffers: transitions for the MLP agent, sub-sequences for recurrent agents.

Both buffers store steps in preallocated numpy arrays (a ring of ``capacity`` steps) and
hand out the same :class:`Batch` layout, so one SAC loss serves both: ``T`` steps per
row, the ``T + 1`` observations around them, and a loss mask. A transition batch is the
case ``T = 1``.

- :class:`TransitionReplay`: uniform over stored steps; FIFO (Continual World: 1e6) or
  reservoir (every step ever offered is kept with equal probability; the "perfect
  memory" of CW uses it).
- :class:`SequenceReplay`: steps remember their episode, which is cut into aligned
  chunks of ``seq_len`` steps (the last one shorter). A sample is the chunk holding a
  uniformly drawn step (so every step weighs the same): an episode no longer than
  ``seq_len`` is replayed whole, from its first step. The steps of the episode before
  the window come with it as a *prefix*: the agent unrolls its cells over the prefix
  without gradient, so the recurrent state at the window's start is the one an unroll
  from the episode's start reaches (``burn_in=None``, the default), or, with an integer
  ``burn_in``, an R2D2-style warm-up over at most that many steps from a zero state. A
  window never crosses an episode boundary; a batch is as long as its longest window.

Example:
    >>> replay = SequenceReplay(capacity=100, obs_dim=2, action_dim=1, seq_len=3, seed=0)
    >>> for t in range(5):  # one episode of 2 steps, then one of 3
    ...     replay.add(np.full(2, t), np.zeros(1), 1.0, np.full(2, t + 1), False, t in (1, 4), task=0)
    >>> batch = replay.sample(4)
    >>> batch.obs.shape, batch.mask.shape, batch.prefix_steps  # whole episodes: no prefix
    (torch.Size([4, 4, 2]), torch.Size([4, 3]), 0)
    >>> int(batch.mask.sum(1).max()) <= 3
    True
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

REPLAY_MODES = ("fifo", "reservoir")
_OPEN = np.iinfo(np.int64).max  # episode end of an episode still being collected


@dataclass
class Batch:
    """A batch of ``B`` rows of ``T`` steps (``T = 1`` for transitions).

    Attributes:
        obs: ``[B, T + 1, D]``: ``obs[:, t]`` is seen before step ``t``, ``obs[:, t + 1]``
            after it (the next observation).
        action, reward, terminated, task: ``[B, T, ...]`` per step (``terminated`` is 1.0
            only for a true termination: time limits and task switches bootstrap).
        mask: ``[B, T]`` 1.0 where the step's loss counts (not padding, not burn-in).
        prev_action, prev_reward: ``[B, T + 1, ...]`` the action and reward before each
            observation (zero at an episode start); None for transition batches.
        prefix_obs, prefix_prev_action, prefix_prev_reward, prefix_mask: the steps of the
            same episode before the window (``[B, P, ...]``, right-aligned: a row's prefix
            ends at ``P``, left padding has ``prefix_mask`` 0). The agent unrolls its
            cells over them without gradient to get the state at the window's start
            (:meth:`agents.nets.networks.RecurrentTrunk.initial_state`). None for transition
            batches; ``P = 0`` when every window starts its episode.
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    terminated: Tensor
    task: Tensor
    mask: Tensor
    prev_action: Tensor | None = None
    prev_reward: Tensor | None = None
    prefix_obs: Tensor | None = None
    prefix_prev_action: Tensor | None = None
    prefix_prev_reward: Tensor | None = None
    prefix_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.action.shape[0]

    @property
    def steps(self) -> int:
        return self.action.shape[1]

    @property
    def prefix_steps(self) -> int:
        return 0 if self.prefix_obs is None else self.prefix_obs.shape[1]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                        for f in fields(self)})

    def padded(self, steps: int, prefix_steps: int = 0) -> "Batch":
        """The same rows padded to ``steps`` window steps and ``prefix_steps`` prefix steps
        (padding is masked out), so batches of different lengths stack or concatenate."""
        rows = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return Batch(**pad_rows(rows, steps, prefix_steps))


def pad_rows(rows: dict[str, Tensor], steps: int, prefix_steps: int = 0) -> dict[str, Tensor]:
    """Pad every per-step tensor of a batch-like dict along its step axis (axis 1).

    Window tensors (``T`` or ``T + 1`` long, read from ``rows["mask"]``) are padded at
    the end with zeros (``task`` repeats its last entry, so it stays a valid head index);
    ``prefix_*`` tensors are right-aligned and padded at the start. Other entries with a
    step axis, such as stored actor outputs ``[B, T, A]``, are padded like window tensors.

    Example:
        >>> rows = {"mask": torch.ones(2, 3), "obs": torch.ones(2, 4, 5), "task": torch.ones(2, 3, dtype=torch.long),
        ...         "prefix_mask": torch.ones(2, 1)}
        >>> out = pad_rows(rows, steps=5, prefix_steps=2)
        >>> out["obs"].shape, out["task"][0].tolist(), out["prefix_mask"][0].tolist()
        (torch.Size([2, 6, 5]), [1, 1, 1, 1, 1], [0.0, 1.0])
    """
    current = rows["mask"].shape[1]
    if steps < current:
        raise ValueError(f"cannot pad a batch of {current} steps to {steps}")
    out = {}
    for name, value in rows.items():
        length = value.shape[1] if value.dim() >= 2 else None
        if name.startswith("prefix_"):
            if prefix_steps < length:
                raise ValueError(f"cannot pad a prefix of {length} steps to {prefix_steps}")
            pad = value.new_zeros(value.shape[0], prefix_steps - length, *value.shape[2:])
            out[name] = torch.cat([pad, value], dim=1)
        elif length in (current, current + 1) and steps > current:
            extra = steps - current
            if name == "task":
                pad = value[:, -1:].expand(value.shape[0], extra, *value.shape[2:])
            else:
                pad = value.new_zeros(value.shape[0], extra, *value.shape[2:])
            out[name] = torch.cat([value, pad], dim=1)
        else:
            out[name] = value
    return out


def _tensor(array: np.ndarray, device: torch.device | str | None) -> Tensor:
    tensor = torch.from_numpy(array)
    return tensor if device is None else tensor.to(device, non_blocking=True)


class TransitionReplay:
    """Uniform replay of single steps, FIFO or reservoir.

    Args:
        capacity: steps held (CW: 1,000,000).
        obs_dim, action_dim: widths of what is stored.
        mode: ``"fifo"`` (oldest out first) or ``"reservoir"`` (uniform sample of all
            steps ever offered; Vitter's algorithm R).
        seed: seed of the buffer's own generator (sampling and reservoir draws).

    Example:
        >>> replay = TransitionReplay(capacity=3, obs_dim=1, action_dim=1, seed=0)
        >>> for t in range(5):
        ...     replay.add(np.array([t]), np.zeros(1), float(t), np.array([t + 1]), False, False, task=0)
        >>> len(replay), sorted(replay.sample(8).reward.flatten().tolist())[0] >= 2.0
        (3, True)
    """

    sequence = False

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, mode: str = "fifo", seed: int | None = None) -> None:
        if mode not in REPLAY_MODES:
            raise ValueError(f"unknown replay mode {mode!r}; allowed: {', '.join(REPLAY_MODES)}")
        if capacity <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        self.capacity, self.obs_dim, self.action_dim, self.mode = int(capacity), int(obs_dim), int(action_dim), mode
        self.rng = np.random.default_rng(seed)
        self.obs = np.zeros((self.capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros((self.capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.float32)
        self.task = np.zeros(self.capacity, dtype=np.int64)
        self.size = 0
        self.seen = 0  # steps ever offered (the logical index of the next one)

    def __len__(self) -> int:
        return self.size

    def clear(self) -> None:
        """Forget everything (CW: the buffer is reset at every task change)."""
        self.size = 0
        self.seen = 0

    def _slot(self) -> int | None:
        if self.size < self.capacity:
            return self.size
        if self.mode == "fifo":
            return self.seen % self.capacity
        j = int(self.rng.integers(self.seen + 1))
        return j if j < self.capacity else None

    def add(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool, task: int) -> None:
        """Store one step (``truncated`` is accepted for a common signature and not needed)."""
        slot = self._slot()
        if slot is not None:
            self._write(slot, obs, action, reward, next_obs, terminated, task)
            self.size = min(self.size + 1, self.capacity)
        self.seen += 1

    def _write(self, slot: int, obs, action, reward, next_obs, terminated, task) -> None:
        self.obs[slot] = obs
        self.next_obs[slot] = next_obs
        self.action[slot] = action
        self.reward[slot] = reward
        self.terminated[slot] = terminated
        self.task[slot] = task

    def sample(self, batch_size: int, device: torch.device | str | None = None) -> Batch:
        """``batch_size`` steps drawn uniformly with replacement, as a ``T = 1`` batch."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self.rng.integers(self.size, size=batch_size)
        obs = np.stack([self.obs[idx], self.next_obs[idx]], axis=1)
        return Batch(
            obs=_tensor(obs, device),
            action=_tensor(self.action[idx][:, None], device),
            reward=_tensor(self.reward[idx][:, None], device),
            terminated=_tensor(self.terminated[idx][:, None], device),
            task=_tensor(self.task[idx][:, None], device),
            mask=_tensor(np.ones((batch_size, 1), dtype=np.float32), device),
        )

    # ------------------------------------------------------------------ checkpoints
    _ARRAYS = ("obs", "next_obs", "action", "reward", "terminated", "task")

    def state_dict(self) -> dict[str, Any]:
        """The filled part of every array (as tensors sharing memory), counters, generator."""
        state: dict[str, Any] = {name: torch.from_numpy(getattr(self, name)[: self.size]) for name in self._ARRAYS}
        state.update(kind=type(self).__name__, capacity=self.capacity, mode=self.mode, size=self.size,
                     seen=self.seen, rng=self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["kind"] != type(self).__name__ or state["capacity"] != self.capacity or state["mode"] != self.mode:
            raise ValueError(
                f"replay state is a {state['kind']} ({state['mode']}, capacity {state['capacity']}); "
                f"this buffer is a {type(self).__name__} ({self.mode}, capacity {self.capacity})"
            )
        self.size, self.seen = int(state["size"]), int(state["seen"])
        for name in self._ARRAYS:
            getattr(self, name)[: self.size] = torch.as_tensor(state[name]).cpu().numpy()
        self.rng.bit_generator.state = state["rng"]


def check_window(seq_len: int, burn_in: int | None) -> None:
    """A clear error for replay-window settings that cannot work."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise ValueError(f"seq_len (steps per replayed window) must be an integer >= 1, got {seq_len!r}")
    if burn_in is not None and (isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0):
        raise ValueError(f"burn_in must be None (the whole episode before a window: exact recurrent state) "
                         f"or an integer >= 0 (at most that many warm-up steps), got {burn_in!r}")


class SequenceReplay(TransitionReplay):
    """Replay of fixed-length sub-sequences within stored episodes (FIFO).

    Args:
        capacity: steps held.
        obs_dim, action_dim: widths of what is stored.
        seq_len: steps per window (the longest stretch that gradients cross). The
            default of the agent (200) holds a whole Meta-World episode.
        burn_in: None: the window's prefix is the whole episode before it (exact
            recurrent state); an integer ``k >= 0``: at most ``k`` steps before it (R2D2's
            burn-in from a zero state; ``0`` starts every window from a zero state).
        seed: seed of the buffer's own generator.

    A batch holds the windows (``T`` = the longest window drawn, padding masked out) and
    their prefixes (``P`` = the longest prefix, right-aligned, see :class:`Batch`).
    """

    sequence = True
    _ARRAYS = TransitionReplay._ARRAYS + ("episode_start", "episode_end")

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, seq_len: int, burn_in: int | None = None,
                 mode: str = "fifo", seed: int | None = None) -> None:
        if mode != "fifo":
            raise ValueError("SequenceReplay supports mode='fifo' only: a reservoir would cut stored episodes apart")
        check_window(seq_len, burn_in)
        super().__init__(capacity, obs_dim, action_dim, mode, seed)
        self.seq_len, self.burn_in = int(seq_len), None if burn_in is None else int(burn_in)
        # Logical (never wrapped) step indices of each stored step's episode bounds.
        self.episode_start = np.zeros(self.capacity, dtype=np.int64)
        self.episode_end = np.full(self.capacity, _OPEN, dtype=np.int64)
        self.current_start = 0

    def clear(self) -> None:
        super().clear()
        self.current_start = 0

    def add(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool, task: int) -> None:
        """Store one step; ``terminated or truncated`` closes its episode."""
        t = self.seen
        slot = t % self.capacity
        self._write(slot, obs, action, reward, next_obs, terminated, task)
        self.episode_start[slot] = self.current_start
        self.episode_end[slot] = _OPEN
        self.seen += 1
        self.size = min(self.size + 1, self.capacity)
        if terminated or truncated:
            first = max(self.current_start, self.seen - self.size)
            self._ring_fill(self.episode_end, first, self.seen, self.seen)
            self.current_start = self.seen

    def _ring_fill(self, array: np.ndarray, begin: int, end: int, value: int) -> None:
        lo, hi = begin % self.capacity, (end - 1) % self.capacity + 1
        if lo < hi:
            array[lo:hi] = value
        else:
            array[lo:] = value
            array[:hi] = value

    def sample(self, batch_size: int, device: torch.device | str | None = None) -> Batch:
        """``batch_size`` windows and their prefixes (see the class docstring)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        cap, oldest, total = self.capacity, self.seen - self.size, self.seen
        drawn = self.rng.integers(oldest, total, size=batch_size)
        drawn_slot = drawn % cap
        true_start = self.episode_start[drawn_slot]
        # Steps overwritten by the ring are gone: an episode then starts, for replay, at the oldest step kept.
        episode_start = np.maximum(true_start, oldest)
        # The window is the aligned chunk holding the drawn step (each step weighs the same).
        start = np.maximum(true_start + (drawn - true_start) // self.seq_len * self.seq_len, oldest)
        end = np.minimum(np.minimum(start + self.seq_len, self.episode_end[drawn_slot]), total)
        first = episode_start if self.burn_in is None else np.maximum(start - self.burn_in, episode_start)
        steps = int((end - start).max())
        window = self._steps(start, end, steps, episode_start)
        prefix_steps = int((start - first).max())
        prefix = self._steps(first, start, prefix_steps, episode_start, right_aligned=True)
        return Batch(
            obs=_tensor(np.concatenate([self.obs[window["slots"][:, :1]], window["next_obs"]], axis=1), device),
            action=_tensor(window["action"], device),
            reward=_tensor(window["reward"], device),
            terminated=_tensor(self.terminated[window["slots"]] * window["keep"], device),
            task=_tensor(self.task[window["slots"]], device),
            mask=_tensor(window["keep"], device),
            prev_action=_tensor(window["prev_action"], device),
            prev_reward=_tensor(window["prev_reward"], device),
            prefix_obs=_tensor(self.obs[prefix["slots"]] * prefix["keep"][..., None], device),
            prefix_prev_action=_tensor(prefix["prev_action"][:, :-1], device),
            prefix_prev_reward=_tensor(prefix["prev_reward"][:, :-1], device),
            prefix_mask=_tensor(prefix["keep"], device),
        )

    def _steps(self, begin: np.ndarray, end: np.ndarray, steps: int, episode_start: np.ndarray,
               right_aligned: bool = False) -> dict[str, np.ndarray]:
        """Steps ``begin..end-1`` of each row, laid out in ``steps`` columns (padding zeroed).

        ``prev_action``/``prev_reward`` have ``steps + 1`` columns: what came before each
        step and, last, the final step's own action and reward (zero at an episode start).
        """
        cap = self.capacity
        column = np.arange(steps)[None, :]
        offset = (steps - (end - begin))[:, None] if right_aligned else 0
        logical = begin[:, None] + column - offset
        keep = (logical >= begin[:, None]) & (logical < end[:, None])
        slots = np.where(keep, logical, begin[:, None]) % cap
        keep_f = keep.astype(np.float32)
        action = self.action[slots] * keep_f[..., None]
        reward = self.reward[slots] * keep_f
        has_prev = (begin > episode_start)[:, None]
        prev_slot = (begin - 1) % cap
        first_action, first_reward = self.action[prev_slot] * has_prev, self.reward[prev_slot] * has_prev[:, 0]
        if right_aligned:  # the step before each real step: the previous column, or the one before ``begin``
            lead = (logical == begin[:, None])
            prev_action = np.concatenate([np.zeros_like(action[:, :1]), action], axis=1)
            prev_reward = np.concatenate([np.zeros_like(reward[:, :1]), reward], axis=1)
            prev_action[:, :-1] = np.where(lead[..., None], first_action[:, None], prev_action[:, :-1])
            prev_reward[:, :-1] = np.where(lead, first_reward[:, None], prev_reward[:, :-1])
        else:
            prev_action = np.concatenate([first_action[:, None], action], axis=1)
            prev_reward = np.concatenate([first_reward[:, None], reward], axis=1)
        return {"slots": slots, "keep": keep_f, "action": action, "reward": reward,
                "next_obs": self.next_obs[slots] * keep_f[..., None], "prev_action": prev_action,
                "prev_reward": prev_reward}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(seq_len=self.seq_len, burn_in=self.burn_in, current_start=self.current_start)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.current_start = int(state["current_start"])
