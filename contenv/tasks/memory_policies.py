"""Scripted policies for the memory tasks: one that remembers, one that cannot.

They prove what each task demands: the remembering policy solves every episode
(success 1.0), while the best memoryless policy, which acts on the current observation
alone, stays at chance because nothing on screen at a recall step tells the answer.

Every policy has ``reset()`` (call at the start of an episode) and
``act(obs) -> np.ndarray`` (an action in ``Box(-1, 1, (4,))``).

Example:
    >>> from contenv.tasks.memory import make_memory_task
    >>> env = make_memory_task("repeat-first", {"d": 3})
    >>> policy = remembering_policy(env)
    >>> obs, info = env.reset(seed=1)
    >>> policy.reset()
    >>> done = False
    >>> while not done:
    ...     obs, reward, terminated, truncated, info = env.step(policy.act(obs))
    ...     done = terminated or truncated
    >>> info["success"]
    True
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

from contenv.tasks.memory import (
    BASE_WIDTH,
    FORWARD,
    IDENTITY_MAPPING,
    LEFT,
    NUM_SYMBOLS,
    RECALL,
    SHOW,
    BitsTask,
    CopyTask,
    MemoryTask,
    RepeatFirstTask,
    TMazeTask,
)


class Policy(Protocol):
    def reset(self) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...


def choice_action(choice: int) -> np.ndarray:
    """The action whose argmax is ``choice``."""
    action = -np.ones(4, dtype=np.float32)
    action[choice] = 1.0
    return action


def _shown_symbol(obs: np.ndarray) -> int:
    return int(np.argmax(obs[:NUM_SYMBOLS]))


class RecallInOrderPolicy:
    """Remembers every flagged symbol and answers them in order through ``mapping``.

    Solves ``copy``, ``repeat-first`` (distractors are not flagged, so they are skipped)
    and ``tmaze(walk=False)`` (the cue is the one flagged symbol).
    """

    def __init__(self, mapping: str = IDENTITY_MAPPING) -> None:
        self.mapping = mapping
        self._held: deque[int] = deque()

    def reset(self) -> None:
        self._held.clear()

    def act(self, obs: np.ndarray) -> np.ndarray:
        if obs[SHOW] == 1.0:
            self._held.append(_shown_symbol(obs))
        if obs[RECALL] == 1.0 and self._held:
            return choice_action(int(self.mapping[self._held.popleft()]))
        return choice_action(0)


class GuessPolicy:
    """The best memoryless policy for ``copy``, ``repeat-first``, ``tmaze`` and ``bits``.

    At a recall step the observation holds only the recall flag (and, in ``bits``, which
    bit is asked), all independent of the answer, so every fixed guess is equally good:
    chance. In ``tmaze(walk=True)`` it walks forward and guesses at the junction.
    """

    def __init__(self, guess: int = 0, walk: bool = False) -> None:
        self.guess = guess
        self.walk = walk

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.walk and obs[RECALL] != 1.0:
            return choice_action(FORWARD)
        return choice_action(self.guess)


class TMazeWalkerPolicy:
    """Remembers the cue, walks forward, turns towards the cue at the junction."""

    def __init__(self) -> None:
        self._cue = LEFT

    def reset(self) -> None:
        self._cue = LEFT

    def act(self, obs: np.ndarray) -> np.ndarray:
        if obs[SHOW] == 1.0:
            self._cue = _shown_symbol(obs)
        if obs[RECALL] == 1.0:
            return choice_action(self._cue)
        return choice_action(FORWARD)


class BitsRecallPolicy:
    """Remembers the ``n`` bits shown at step 0 and answers the queried one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._bits = np.zeros(n, dtype=np.int64)

    def reset(self) -> None:
        self._bits[:] = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        if obs[SHOW] == 1.0:
            self._bits[:] = obs[BASE_WIDTH : BASE_WIDTH + self.n] > 0.5
        if obs[RECALL] == 1.0:
            query = int(np.argmax(obs[BASE_WIDTH + self.n : BASE_WIDTH + 2 * self.n]))
            return choice_action(int(self._bits[query]))
        return choice_action(0)


def remembering_policy(env: MemoryTask) -> Policy:
    """A policy that solves every episode of ``env`` (success 1.0)."""
    if isinstance(env, (CopyTask, RepeatFirstTask)):
        return RecallInOrderPolicy(env.mapping)
    if isinstance(env, TMazeTask):
        return TMazeWalkerPolicy() if env.walk else RecallInOrderPolicy()
    if isinstance(env, BitsTask):
        return BitsRecallPolicy(env.n)
    raise TypeError(f"no scripted policy for {type(env).__name__}")


def memoryless_policy(env: MemoryTask) -> Policy:
    """The best reactive policy for ``env``: it stays at chance on every task."""
    if isinstance(env, (CopyTask, RepeatFirstTask, BitsTask)):
        return GuessPolicy()
    if isinstance(env, TMazeTask):
        return GuessPolicy(walk=env.walk)
    raise TypeError(f"no scripted policy for {type(env).__name__}")
