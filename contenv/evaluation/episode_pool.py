"""Step many env slots, each playing a queue of seeded episodes, in a few worker processes.

The evaluator runs the episodes of every sequence position together: CW20 with 10
stochastic episodes is 200 episodes. One process per env (Gymnasium's AsyncVectorEnv)
would not fit a laptop, and neither would 200 Meta-World envs (~27 MB each), so an
:class:`EpisodePool` has a bounded number of slots, split over ``num_workers`` processes
that step their slots in turn. Slots are built once and reused by every later
evaluation of a training run (building a Meta-World env costs ~0.2 s).

Each slot plays a queue of seeded episodes, starting the next as soon as one ends; a
slot with nothing left ignores actions and repeats its last observation, so the policy
can always be called on the full batch.

Example:
    >>> import contenv
    >>> specs = contenv.position_specs("contenv/Sequence-v0", tasks=["reach-v3"], horizon=3)
    >>> pool = EpisodePool([specs[0], specs[0]], num_workers=0)
    >>> obs = pool.reset([[1, 2], [3]])     # slot 0 plays two episodes, slot 1 one
    >>> obs.shape
    (2, 40)
    >>> for _ in range(3):
    ...     step = pool.step(np.zeros((2, 4), dtype=np.float32))
    >>> step.episode_end.tolist(), step.done.tolist()
    ([True, True], [False, True])
    >>> pool.close()
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

__all__ = [
    "EnvFactory",
    "PoolStep",
    "SlotGroup",
    "EpisodePool",
]


EnvFactory = Callable[[], gym.Env]


@dataclass
class PoolStep:
    """One step of every slot: arrays of length ``num_slots``.

    ``episode_end`` marks slots whose episode ended on this step (``success``, ``score``
    are that episode's); such a slot has already started its next queued episode, and
    ``obs`` is that episode's first observation. ``done`` marks slots with nothing left.
    """

    obs: np.ndarray
    reward: np.ndarray
    episode_end: np.ndarray
    success: np.ndarray
    score: np.ndarray
    done: np.ndarray


class SlotGroup:
    """Some slots, stepped in turn (inside a worker process or in-process)."""

    def __init__(self, factories: Sequence[EnvFactory]) -> None:
        self.envs = [factory() for factory in factories]
        self.queues: list[list[int]] = [[] for _ in self.envs]
        self.done = np.ones(len(self.envs), dtype=bool)
        self.last_obs: list[np.ndarray] = [np.zeros(0)] * len(self.envs)

    def reset(self, seed_queues: Sequence[Sequence[int]]) -> np.ndarray:
        """Give every slot its queue of episode seeds; an empty queue leaves it idle."""
        for i, (env, queue) in enumerate(zip(self.envs, seed_queues)):
            self.queues[i] = [int(s) for s in queue]
            self.done[i] = not self.queues[i]
            if self.queues[i]:
                self.last_obs[i], _ = env.reset(seed=self.queues[i].pop(0))
            elif self.last_obs[i].size == 0:
                self.last_obs[i], _ = env.reset()
        return np.stack(self.last_obs)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(self.envs)
        rewards, scores = np.zeros(n), np.full(n, np.nan)
        ended, success = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for i, env in enumerate(self.envs):
            if self.done[i]:
                continue
            obs, rewards[i], terminated, truncated, info = env.step(actions[i])
            self.last_obs[i] = obs
            if terminated or truncated:
                ended[i] = True
                success[i] = bool(info.get("success", False))
                scores[i] = float(info.get("score", float(success[i])))
                if self.queues[i]:
                    self.last_obs[i], _ = env.reset(seed=self.queues[i].pop(0))
                else:
                    self.done[i] = True
        return np.stack(self.last_obs), rewards, ended, success, scores, self.done.copy()

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(conn: Any, factories: Sequence[EnvFactory]) -> None:
    group = SlotGroup(factories)
    try:
        while True:
            command, payload = conn.recv()
            if command == "reset":
                conn.send(group.reset(payload))
            elif command == "step":
                conn.send(group.step(payload))
            elif command == "close":
                group.close()
                conn.send(None)
                return
    except (EOFError, KeyboardInterrupt):
        group.close()


class EpisodePool:
    """``num_slots`` single-episode envs stepped together.

    Args:
        factories: one picklable zero-argument env factory per slot (e.g. a
            :class:`~contenv.position_env.PositionSpec`).
        num_workers: worker processes; 0 steps every slot in this process.
    """

    def __init__(self, factories: Sequence[EnvFactory], num_workers: int = 0) -> None:
        self.num_slots = len(factories)
        if self.num_slots == 0:
            raise ValueError("an EpisodePool needs at least one slot")
        num_workers = max(0, min(int(num_workers), self.num_slots))
        self.num_workers = num_workers
        if num_workers == 0:
            self._local = SlotGroup(factories)
            self._chunks: list[slice] = [slice(0, self.num_slots)]
            return
        self._local = None
        bounds = np.linspace(0, self.num_slots, num_workers + 1).round().astype(int)
        self._chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        # forkserver: workers never inherit the parent's torch threads or CUDA context.
        context = mp.get_context("forkserver")
        self._conns, self._procs = [], []
        for chunk in self._chunks:
            parent, child = context.Pipe()
            proc = context.Process(target=_worker, args=(child, list(factories[chunk])), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def reset(self, seed_queues: Sequence[Sequence[int]]) -> np.ndarray:
        """Queue episodes: slot ``i`` plays one episode per seed of ``seed_queues[i]``, in order.

        Returns the first observations ``[num_slots, obs_dim]`` (idle slots repeat their last).
        """
        if len(seed_queues) != self.num_slots:
            raise ValueError(f"need one seed queue per slot ({self.num_slots}), got {len(seed_queues)}")
        if self._local is not None:
            return self._local.reset(seed_queues)
        for conn, chunk in zip(self._conns, self._chunks):
            conn.send(("reset", list(seed_queues[chunk])))
        return np.concatenate(self._receive())

    def step(self, actions: np.ndarray) -> PoolStep:
        """Step every busy slot with its row of ``actions``; finished episodes roll over."""
        if self._local is not None:
            parts = [self._local.step(actions)]
        else:
            for conn, chunk in zip(self._conns, self._chunks):
                conn.send(("step", actions[chunk]))
            parts = self._receive()
        return PoolStep(*(np.concatenate([p[k] for p in parts]) for k in range(6)))

    def _receive(self) -> list[Any]:
        try:
            return [conn.recv() for conn in self._conns]
        except (EOFError, ConnectionError) as err:
            codes = [proc.exitcode for proc in self._procs]
            raise RuntimeError(
                f"an evaluation worker died (exit codes {codes}). Scripts that evaluate with workers "
                "need the `if __name__ == '__main__':` guard; see the worker's traceback above."
            ) from err

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            return
        for conn, proc in zip(self._conns, self._procs):
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> "EpisodePool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
