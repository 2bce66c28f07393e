"""Run a policy on the test env of every sequence position, all at once.

Continual World evaluates every 20,000 steps on every position: 10 stochastic episodes
(the metrics use these) and 1 deterministic. :class:`Evaluator` runs all positions and
episodes together through one :class:`~contenv.evaluation.episode_pool.EpisodePool` and asks the
policy for one batch of actions per step, on the policy's own device.

Any policy fits that implements :class:`BatchedPolicy`; :class:`ScriptedPolicy` wraps
Meta-World's experts and :class:`SB3Policy` any Stable-Baselines3 model.

Example:
    >>> import contenv
    >>> specs = contenv.position_specs("contenv/Sequence-v0", tasks=["reach-v3", "window-close-v3"])
    >>> result = evaluate(ScriptedPolicy(["reach-v3", "window-close-v3"]), specs, episodes=2, deterministic_episodes=0)
    >>> result.stochastic.success.tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import gymnasium as gym
import numpy as np

from contenv.evaluation.episode_pool import EpisodePool
from contenv.position_env import PositionSpec, position_specs


__all__ = [
    "BatchedPolicy",
    "EpisodeStats",
    "EvaluationResult",
    "episode_seed",
    "Evaluator",
    "evaluate",
    "evaluate_sequential",
    "ScriptedPolicy",
    "SB3Policy",
]


class BatchedPolicy(Protocol):
    """What the evaluator drives: one call per step for the whole batch.

    ``obs`` is ``[B, obs_dim]`` in the sequence's layout, ``state`` is ``None`` at the first
    call and afterwards what the policy returned, ``episode_start`` ``[B]`` marks rows whose
    recurrent state must be reset, ``positions`` ``[B]`` gives each row's sequence position,
    ``rewards`` ``[B]`` the reward of each row's previous step (0 at an episode start), for
    recurrent agents that read it. Returns actions ``[B, 4]`` in [-1, 1] and the new state.
    """

    def act(
        self, obs: np.ndarray, state: Any, episode_start: np.ndarray, deterministic: bool, positions: np.ndarray,
        rewards: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]: ...


@dataclass
class EpisodeStats:
    """Per-position means over episodes: success rate, return, length, score."""

    success: np.ndarray
    ret: np.ndarray
    length: np.ndarray
    score: np.ndarray


@dataclass
class EvaluationResult:
    """Stochastic and deterministic statistics of every position."""

    task_names: list[str]
    stochastic: EpisodeStats | None
    deterministic: EpisodeStats | None
    episodes: dict[str, int] = field(default_factory=dict)

    def as_row(self) -> dict[str, float]:
        """The progress.csv columns ``test/<mode>/<i>/<task>/<stat>`` of this evaluation."""
        row: dict[str, float] = {}
        for mode in ("stochastic", "deterministic"):
            stats = getattr(self, mode)
            if stats is None:
                continue
            for i, name in enumerate(self.task_names):
                prefix = f"test/{mode}/{i}/{name}"
                row[f"{prefix}/success"] = float(stats.success[i])
                row[f"{prefix}/return"] = float(stats.ret[i])
                row[f"{prefix}/length"] = float(stats.length[i])
                if not np.isnan(stats.score[i]):
                    row[f"{prefix}/score"] = float(stats.score[i])
        return row


def episode_seed(seed: int, position: int, episode: int, deterministic: bool) -> int:
    """The env seed of one evaluation episode; the sequential loop uses the same."""
    return int(np.random.SeedSequence([seed, position, episode, int(deterministic)]).generate_state(1)[0])


class Evaluator:
    """Evaluates policies on every position, keeping its worker processes between calls.

    Args:
        env_or_specs: a ContinualEnv (or its id) or a list of :class:`PositionSpec`.
        episodes: stochastic episodes per position (CW: 10).
        deterministic_episodes: deterministic episodes per position (CW: 1).
        num_workers: worker processes stepping the envs; 0 runs them in this process.
        max_envs: at most this many envs in all (~27 MB each for Meta-World); positions
            get an equal share and play their remaining episodes one after another.
    """

    def __init__(
        self,
        env_or_specs: gym.Env | str | Sequence[PositionSpec],
        episodes: int = 10,
        deterministic_episodes: int = 1,
        num_workers: int = 0,
        max_envs: int = 64,
    ) -> None:
        if episodes < 0 or deterministic_episodes < 0 or episodes + deterministic_episodes == 0:
            raise ValueError(f"need episodes >= 0, deterministic_episodes >= 0 and at least one episode, got {episodes}, {deterministic_episodes}")
        specs = list(env_or_specs) if isinstance(env_or_specs, (list, tuple)) else position_specs(env_or_specs)
        if max_envs < len(specs):
            raise ValueError(f"max_envs={max_envs} is below the number of positions ({len(specs)}): every position needs an env")
        self.task_names = [s.task_name for s in specs]
        self.episodes = {"stochastic": int(episodes), "deterministic": int(deterministic_episodes)}
        self.envs_per_position = min(max(self.episodes.values()), max_envs // len(specs))
        # Slots ordered position-major: slot k of position p plays episodes k, k + m, k + 2m...
        self._positions = np.repeat(np.arange(len(specs)), self.envs_per_position)
        self._rank = np.tile(np.arange(self.envs_per_position), len(specs))
        self._pool = EpisodePool([specs[p] for p in self._positions], num_workers=num_workers)

    def evaluate(self, policy: BatchedPolicy, seed: int = 0) -> EvaluationResult:
        results: dict[str, EpisodeStats | None] = {"stochastic": None, "deterministic": None}
        for mode, count in self.episodes.items():
            if count:
                results[mode] = self._run(policy, seed, mode == "deterministic", count)
        return EvaluationResult(self.task_names, results["stochastic"], results["deterministic"], dict(self.episodes))

    def _run(self, policy: BatchedPolicy, seed: int, deterministic: bool, count: int) -> EpisodeStats:
        m = self.envs_per_position
        queues = [[episode_seed(seed, p, e, deterministic) for e in range(k, count, m)]
                  for p, k in zip(self._positions, self._rank)]
        obs = self._pool.reset(queues)
        num = self._pool.num_slots
        running_return, running_length = np.zeros(num), np.zeros(num)
        busy = np.array([len(q) > 0 for q in queues])
        episode_start = busy.copy()
        rewards = np.zeros(num, dtype=np.float32)
        positions, success, returns, lengths, scores = [], [], [], [], []
        state = None
        while busy.any():
            actions, state = policy.act(obs, state, episode_start, deterministic, self._positions, rewards=rewards)
            step = self._pool.step(np.asarray(actions, dtype=np.float32))
            running_return[busy] += step.reward[busy]
            running_length[busy] += 1
            for i in np.flatnonzero(step.episode_end):
                positions.append(self._positions[i])
                success.append(step.success[i])
                returns.append(running_return[i])
                lengths.append(running_length[i])
                scores.append(step.score[i])
            running_return[step.episode_end] = 0.0
            running_length[step.episode_end] = 0.0
            episode_start = step.episode_end & ~step.done
            rewards = np.where(episode_start, 0.0, step.reward).astype(np.float32)
            busy = ~step.done
            obs = step.obs
        return _per_position(np.array(positions), np.array(success), np.array(returns), np.array(lengths),
                             np.array(scores), len(self.task_names))

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def evaluate(
    policy: BatchedPolicy,
    env_or_specs: gym.Env | str | Sequence[PositionSpec],
    episodes: int = 10,
    deterministic_episodes: int = 1,
    seed: int = 0,
    num_workers: int = 0,
    max_envs: int = 64,
) -> EvaluationResult:
    """One-off batched evaluation (builds and closes its own :class:`Evaluator`)."""
    with Evaluator(env_or_specs, episodes, deterministic_episodes, num_workers, max_envs) as evaluator:
        return evaluator.evaluate(policy, seed)


def evaluate_sequential(
    policy: BatchedPolicy,
    specs: Sequence[PositionSpec],
    episodes: int = 10,
    deterministic_episodes: int = 1,
    seed: int = 0,
) -> EvaluationResult:
    """The plain loop over positions and episodes, one env and batch size 1 at a time.

    It is the definition the batched evaluator must match (same seeds, same numbers).
    """
    results: dict[str, EpisodeStats | None] = {"stochastic": None, "deterministic": None}
    for mode, count in (("stochastic", episodes), ("deterministic", deterministic_episodes)):
        if not count:
            continue
        positions, success, returns, lengths, scores = [], [], [], [], []
        for p, spec in enumerate(specs):
            env = spec()
            for e in range(count):
                obs, _ = env.reset(seed=episode_seed(seed, p, e, mode == "deterministic"))
                state, start, total, length, done = None, np.ones(1, dtype=bool), 0.0, 0, False
                reward = 0.0
                while not done:
                    action, state = policy.act(obs[None], state, start, mode == "deterministic", np.array([p]),
                                               rewards=np.array([reward], dtype=np.float32))
                    obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32)[0])
                    total, length, start, done = total + reward, length + 1, np.zeros(1, dtype=bool), terminated or truncated
                positions.append(p)
                success.append(bool(info.get("success", False)))
                returns.append(total)
                lengths.append(length)
                scores.append(float(info.get("score", float(info.get("success", False)))))
            env.close()
        results[mode] = _per_position(
            np.array(positions), np.array(success),
            np.array(returns), np.array(lengths), np.array(scores), len(specs),
        )
    return EvaluationResult([s.task_name for s in specs], results["stochastic"], results["deterministic"],
                            {"stochastic": episodes, "deterministic": deterministic_episodes})


def _per_position(positions, success, returns, lengths, scores, num_positions) -> EpisodeStats:
    def mean(values: np.ndarray) -> np.ndarray:
        return np.array([np.mean(values[positions == p]) for p in range(num_positions)])

    return EpisodeStats(mean(success.astype(float)), mean(returns), mean(lengths), mean(scores))


class ScriptedPolicy:
    """Meta-World's scripted expert of each row's position (a :class:`BatchedPolicy`)."""

    def __init__(self, task_names: Sequence[str]) -> None:
        from contenv.scripted import ScriptedMetaWorldPolicy

        self._experts = {name: ScriptedMetaWorldPolicy(name) for name in set(task_names)}
        self.task_names = list(task_names)

    def act(self, obs, state, episode_start, deterministic, positions, rewards=None):
        actions = np.stack([self._experts[self.task_names[p]].act(o) for o, p in zip(obs, positions)])
        return actions, state


class SB3Policy:
    """Any Stable-Baselines3 model as a :class:`BatchedPolicy` (recurrent ones included)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = getattr(model, "device", "cpu")

    def act(self, obs, state, episode_start, deterministic, positions, rewards=None):
        actions, state = self.model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        return np.clip(actions, -1.0, 1.0), state
