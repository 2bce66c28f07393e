"""Memory-demanding POMDP tasks with separate dials for memory load and length.

Every task is a short quiz: something is shown, time passes, and the agent must answer
from memory. What is shown is never visible again, so a reactive (memoryless) policy
stays at chance; ``contenv.tasks.memory_policies`` holds a remembering and a memoryless
scripted policy for each task, and the tests use them to prove both facts.

Tasks (spec with its dials and their defaults):

- ``copy(p=3, i=0, mapping='0123')``: ``p`` items from a 4-symbol alphabet are shown one
  per step, then ``i`` blank padding steps, then ``p`` recall steps where the agent
  outputs the items in order. ``p`` is the memory load (how much is held); ``i`` only
  lengthens the episode (``2p + i`` steps, always ``p`` recall steps).
- ``repeat-first(d=4, mapping='0123')``: a symbol is shown at step 0, then ``d``
  distractor steps show random symbols (not flagged "show"), then the agent outputs the
  first symbol. Load 1, duration ``d`` (``d + 2`` steps).
- ``tmaze(L=10, walk=False)``: passive T-Maze. A cue (left or right) is shown only on
  the first step; the junction is reached after a corridor of length ``L``, where the
  agent chooses left or right. With ``walk=False`` (default) the corridor advances by
  itself, so the memory length is exactly ``L`` and nothing but the cue is learned
  (``L + 1`` steps). With ``walk=True`` the agent walks (actions: 0 left, 1 right,
  2 forward, 3 back) and pays ``1 / max_steps`` for every step that makes no progress,
  as in Ni et al. (2023); the episode is truncated after ``max_steps = 2 (L + 1)``.
- ``bits(n=3, d=4)``: bsuite MemoryChain-like. ``n`` bits are shown together at step 0,
  ``d`` blank steps follow, then one randomly chosen bit is queried. ``n`` is the
  capacity (every bit must be held, since any may be asked), ``d`` the delay
  (``d + 2`` steps).

``mapping`` (copy, repeat-first) is a permutation of the four symbols written as a
string: the correct answer to symbol ``s`` is ``int(mapping[s])``. The identity is
``'0123'``; a different mapping keeps every input the same and changes only the answers,
which is what a memory distractor needs (see ``contenv.distractors``).

Shared observation layout, so that tasks of one sequence line up dim by dim after
padding: ``[symbol one-hot (4) | show flag | recall flag | extras]``. The symbol part is
zero on blank steps; "show" marks an item to remember; "recall" marks a step whose action
is graded. Only ``bits`` has extras: its ``n`` context bits, then the one-hot of the
queried bit. All values lie in [0, 1].

Actions use the unified space ``Box(-1, 1, (4,))``; a choice among ``k`` options is the
argmax of the first ``k`` components. Actions on ungraded steps are ignored.

Reward: ``+1/q`` per correct answer (``q`` graded steps), 0 otherwise, so a return is
the fraction correct in [0, 1] (``tmaze(walk=True)`` adds its small step penalty).
``info["success"]`` is False until the last step, where it is True iff every answer was
right; ``info["score"]`` (fraction correct) is given on the last step. Episodes end with
``terminated=True`` after the last graded step. The tasks ignore the sequence's
``horizon`` and ``reward_version``: their length is set by their own dials.

Example:
    >>> env = make_memory_task("copy", {"p": 2, "i": 1})
    >>> obs, info = env.reset(seed=0)
    >>> env.episode_length, env.num_recall_steps, obs.shape
    (5, 2, (6,))
    >>> shown = []
    >>> for t in range(env.episode_length):
    ...     if obs[4] == 1.0:                       # show flag: remember the symbol
    ...         shown.append(int(obs[:4].argmax()))
    ...     action = -np.ones(4, dtype=np.float32)
    ...     if obs[5] == 1.0:                       # recall flag: answer in order
    ...         action[shown.pop(0)] = 1.0
    ...     obs, reward, terminated, truncated, info = env.step(action)
    >>> terminated, info["success"], info["score"]
    (True, True, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from contenv.finite import check_action
from contenv.tasks.registry import TaskFamily, check_dials, format_task_spec, register_task_family, unknown_name_error

NUM_SYMBOLS = 4
SHOW = NUM_SYMBOLS  # index of the show flag
RECALL = NUM_SYMBOLS + 1  # index of the recall flag
BASE_WIDTH = NUM_SYMBOLS + 2
IDENTITY_MAPPING = "0123"

# T-Maze walking actions (argmax of the four action components).
LEFT, RIGHT, FORWARD, BACK = 0, 1, 2, 3


def check_int_dial(task: str, name: str, value: Any, minimum: int) -> int:
    """An integer dial ``>= minimum``; a ValueError saying what is allowed otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"dial {name} of task {task!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_mapping(task: str, value: Any) -> str:
    """A permutation of the four symbols as a string such as ``'1032'``.

    An integer is read with leading zeros restored (``123`` is ``'0123'``), because a spec
    like ``mapping=0123`` is not a valid literal and ``mapping=1032`` parses as an int.
    """
    text = f"{int(value):04d}" if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if not isinstance(text, str) or sorted(text) != list(IDENTITY_MAPPING):
        raise ValueError(
            f"dial mapping of task {task!r} must be a permutation of the symbols 0-3 written as a string, "
            f"e.g. '0123' (identity) or '1032', got {value!r}"
        )
    return text


def check_bool_dial(task: str, name: str, value: Any) -> bool:
    if value not in (True, False):  # also admits 0 and 1
        raise ValueError(f"dial {name} of task {task!r} must be True or False, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class Episode:
    """One drawn episode: what is seen at each step and what answer each step expects.

    Attributes:
        observations: ``[T, width]``, row ``t`` is the observation before step ``t``.
        answers: ``[T]``, the correct choice at step ``t``, or -1 where ungraded.
    """

    observations: np.ndarray
    answers: np.ndarray


class MemoryTask(gym.Env[np.ndarray, np.ndarray]):
    """Base of the quiz-like tasks: a drawn :class:`Episode` is played step by step.

    Subclasses set ``num_choices`` and implement ``_draw_episode``, ``episode_length`` and
    ``num_recall_steps`` (both fixed by the dials).
    """

    metadata = {"render_modes": []}
    num_choices: int = NUM_SYMBOLS

    def __init__(self, task_spec: str, width: int = BASE_WIDTH) -> None:
        self.task_spec = task_spec
        # Bounds [0, 1] in every dim: flags and one-hots; low < high keeps the checker quiet.
        self.observation_space = gym.spaces.Box(0.0, 1.0, (width,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
        self._episode: Episode | None = None
        self._t = 0
        self._num_correct = 0

    @property
    def episode_length(self) -> int:
        raise NotImplementedError

    @property
    def num_recall_steps(self) -> int:
        raise NotImplementedError

    def _draw_episode(self, rng: np.random.Generator) -> Episode:
        raise NotImplementedError

    def _blank(self, length: int) -> np.ndarray:
        return np.zeros((length, self.observation_space.shape[0]), dtype=np.float32)

    def choice(self, action: np.ndarray) -> int:
        """The option an action picks: argmax of its first ``num_choices`` components."""
        return int(np.argmax(np.asarray(action, dtype=np.float64).reshape(-1)[: self.num_choices]))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._episode = self._draw_episode(self.np_random)
        self._t = 0
        self._num_correct = 0
        return self._episode.observations[0].copy(), {"success": False}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        episode = self._require_episode()
        action = check_action(action, self.action_space.shape, self.task_spec)
        reward = 0.0
        target = int(episode.answers[self._t])
        if target >= 0:
            correct = self.choice(action) == target
            self._num_correct += int(correct)
            reward = float(correct) / self.num_recall_steps
        self._t += 1
        terminated = self._t == len(episode.answers)
        if terminated:
            self._episode = None
            return self._blank(1)[0], reward, True, False, self._final_info()
        return episode.observations[self._t].copy(), reward, False, False, {"success": False}

    def _require_episode(self) -> Episode:
        if self._episode is None:
            raise RuntimeError(f"{self.task_spec}: the episode has ended (or never started); call reset() first")
        return self._episode

    def _final_info(self) -> dict[str, Any]:
        score = self._num_correct / self.num_recall_steps
        return {"success": self._num_correct == self.num_recall_steps, "score": float(score)}

    def _show(self, obs: np.ndarray, symbol: int, flagged: bool = True) -> None:
        obs[symbol] = 1.0
        obs[SHOW] = float(flagged)


class CopyTask(MemoryTask):
    """``copy(p, i, mapping)``: show ``p`` items, pad ``i`` blank steps, recall the ``p`` items.

    Args:
        p: items to hold (memory load), >= 1.
        i: blank padding steps between showing and recalling (length only), >= 0.
        mapping: answer permutation, ``'0123'`` is the plain copy.
    """

    def __init__(self, p: int = 3, i: int = 0, mapping: str = IDENTITY_MAPPING) -> None:
        self.p = check_int_dial("copy", "p", p, 1)
        self.i = check_int_dial("copy", "i", i, 0)
        self.mapping = check_mapping("copy", mapping)
        super().__init__(format_task_spec("copy", {"p": self.p, "i": self.i, "mapping": self.mapping}))

    @property
    def episode_length(self) -> int:
        return 2 * self.p + self.i

    @property
    def num_recall_steps(self) -> int:
        return self.p

    def _draw_episode(self, rng: np.random.Generator) -> Episode:
        items = rng.integers(NUM_SYMBOLS, size=self.p)
        obs = self._blank(self.episode_length)
        answers = np.full(self.episode_length, -1, dtype=np.int64)
        recall_start = self.p + self.i
        for k, item in enumerate(items):
            self._show(obs[k], int(item))
            obs[recall_start + k, RECALL] = 1.0
            answers[recall_start + k] = int(self.mapping[item])
        return Episode(obs, answers)


class RepeatFirstTask(MemoryTask):
    """``repeat-first(d, mapping)``: remember the first symbol through ``d`` distractors.

    Args:
        d: distractor steps between the shown symbol and the recall step, >= 0.
        mapping: answer permutation, ``'0123'`` repeats the symbol itself.
    """

    def __init__(self, d: int = 4, mapping: str = IDENTITY_MAPPING) -> None:
        self.d = check_int_dial("repeat-first", "d", d, 0)
        self.mapping = check_mapping("repeat-first", mapping)
        super().__init__(format_task_spec("repeat-first", {"d": self.d, "mapping": self.mapping}))

    @property
    def episode_length(self) -> int:
        return self.d + 2

    @property
    def num_recall_steps(self) -> int:
        return 1

    def _draw_episode(self, rng: np.random.Generator) -> Episode:
        first = int(rng.integers(NUM_SYMBOLS))
        distractors = rng.integers(NUM_SYMBOLS, size=self.d)
        obs = self._blank(self.episode_length)
        self._show(obs[0], first)
        for k, symbol in enumerate(distractors, start=1):
            # Distractors occupy the symbol channel but are not flagged "show".
            self._show(obs[k], int(symbol), flagged=False)
        obs[-1, RECALL] = 1.0
        answers = np.full(self.episode_length, -1, dtype=np.int64)
        answers[-1] = int(self.mapping[first])
        return Episode(obs, answers)


class TMazeTask(MemoryTask):
    """``tmaze(L, walk)``: passive T-Maze; the cue (symbol 0 left, 1 right) is seen once.

    Args:
        L: corridor length (steps from the cue to the junction), >= 1.
        walk: False (default): the corridor advances by itself, ``L + 1`` steps, 2 choices.
            True: the agent walks (0 left, 1 right, 2 forward, 3 back); a step that makes
            no progress costs ``1 / max_steps``; truncated after ``max_steps = 2 (L + 1)``.
    """

    def __init__(self, L: int = 10, walk: bool = False) -> None:  # noqa: N803 - the dial is called L
        self.L = check_int_dial("tmaze", "L", L, 1)
        self.walk = check_bool_dial("tmaze", "walk", walk)
        self.num_choices = 4 if self.walk else 2
        self.max_steps = 2 * (self.L + 1)
        super().__init__(format_task_spec("tmaze", {"L": self.L, "walk": self.walk}))
        self._position = 0
        self._cue = 0

    @property
    def episode_length(self) -> int:
        """Steps of an episode (with ``walk=True``: when walked straight to the junction)."""
        return self.L + 1

    @property
    def num_recall_steps(self) -> int:
        return 1

    def _draw_episode(self, rng: np.random.Generator) -> Episode:
        self._cue = int(rng.integers(2))
        self._position = 0
        obs = self._blank(self.episode_length)
        self._show(obs[0], self._cue)
        obs[-1, RECALL] = 1.0  # the junction
        answers = np.full(self.episode_length, -1, dtype=np.int64)
        answers[-1] = self._cue
        return Episode(obs, answers)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.walk:
            return super().step(action)
        self._require_episode()
        move = self.choice(check_action(action, self.action_space.shape, self.task_spec))
        self._t += 1
        at_junction = self._position == self.L
        if at_junction and move in (LEFT, RIGHT):
            self._num_correct = int(move == self._cue)
            self._episode = None
            return self._blank(1)[0], float(self._num_correct), True, False, self._final_info()
        progress = move == FORWARD and not at_junction
        if progress:
            self._position += 1
        elif move == BACK and self._position > 0:
            self._position -= 1
        reward = 0.0 if progress else -1.0 / self.max_steps
        obs = self._blank(1)[0]
        if self._position == self.L:
            obs[RECALL] = 1.0
        if self._t >= self.max_steps:
            self._episode = None
            return obs, reward, False, True, self._final_info()
        return obs, reward, False, False, {"success": False}


class BitsTask(MemoryTask):
    """``bits(n, d)``: hold ``n`` bits through ``d`` blank steps; one of them is asked.

    Args:
        n: bits shown together at step 0 (capacity), >= 1.
        d: blank steps before the query, >= 0.
    """

    num_choices = 2

    def __init__(self, n: int = 3, d: int = 4) -> None:
        self.n = check_int_dial("bits", "n", n, 1)
        self.d = check_int_dial("bits", "d", d, 0)
        super().__init__(format_task_spec("bits", {"n": self.n, "d": self.d}), width=BASE_WIDTH + 2 * self.n)

    @property
    def episode_length(self) -> int:
        return self.d + 2

    @property
    def num_recall_steps(self) -> int:
        return 1

    def _draw_episode(self, rng: np.random.Generator) -> Episode:
        bits = rng.integers(2, size=self.n)
        query = int(rng.integers(self.n))
        obs = self._blank(self.episode_length)
        obs[0, SHOW] = 1.0
        obs[0, BASE_WIDTH : BASE_WIDTH + self.n] = bits
        obs[-1, RECALL] = 1.0
        obs[-1, BASE_WIDTH + self.n + query] = 1.0
        answers = np.full(self.episode_length, -1, dtype=np.int64)
        answers[-1] = int(bits[query])
        return Episode(obs, answers)


# name -> (class, dial defaults); the defaults are also the allowed dials.
MEMORY_TASKS: dict[str, tuple[type[MemoryTask], dict[str, Any]]] = {
    "copy": (CopyTask, {"p": 3, "i": 0, "mapping": IDENTITY_MAPPING}),
    "repeat-first": (RepeatFirstTask, {"d": 4, "mapping": IDENTITY_MAPPING}),
    "tmaze": (TMazeTask, {"L": 10, "walk": False}),
    "bits": (BitsTask, {"n": 3, "d": 4}),
}


def make_memory_task(
    task_name: str,
    params: dict[str, Any] | None = None,
    *,
    horizon: int | None = None,
    reward_version: str | None = None,
) -> MemoryTask:
    """Build one memory task from its name and dials (the registry's factory).

    ``horizon`` and ``reward_version`` are accepted for the registry's signature and
    ignored: a memory task's length is set by its dials, and it has one reward.

    Raises:
        ValueError: unknown task name, unknown dial, or a dial out of range.
    """
    if task_name not in MEMORY_TASKS:
        raise unknown_name_error("memory task", task_name, MEMORY_TASKS)
    cls, defaults = MEMORY_TASKS[task_name]
    return cls(**check_dials(task_name, dict(params or {}), defaults))


register_task_family(TaskFamily("memory", names=tuple(MEMORY_TASKS), factory=make_memory_task))
