"""Atomic, verified training checkpoints that resume a run exactly.

A checkpoint holds the agent's whole training state (networks, optimizer, replay,
protection, its generators and counters), the scenario env (position *and* the random
streams of its task envs, so later resets draw the same layouts), the global random
states (python, numpy, torch, CUDA) and whatever the caller adds (``extra``).

Exactness: a MuJoCo episode in flight cannot be restored, so checkpoints are taken
only *between* episodes (``Callback.on_episode_end``: at every task end, where the
episode is truncated, and at the first episode end after every N steps). The resumed
run starts with the same ``reset()`` the uninterrupted one makes, so on CPU it produces
the same numbers.

File format: a fixed-length text header ``CONTENV-CHECKPOINT v1 sha256=<hex> bytes=<n>``
followed by a ``torch.save`` payload. Writing goes through a temporary file, fsync and
``os.replace``; reading checks the length (truncation) and the SHA-256 (corruption)
before unpickling, and names the file in every error.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> write_checkpoint(path, {"step": 7})
    >>> read_checkpoint(path)["step"]
    7
    >>> _ = path.write_bytes(path.read_bytes()[:-3])
    >>> read_checkpoint(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agents.training.checkpoint.CheckpointError: .../checkpoint.pt: truncated: ...
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import IO, Any

import gymnasium as gym
import numpy as np
import torch

from agents.training.finite import check_finite_state
from contenv.atomic import atomic_file

MAGIC = b"CONTENV-CHECKPOINT v1"
_HEADER_LEN = len(MAGIC) + len(" sha256=") + 64 + len(" bytes=") + 20 + 1
CHECKPOINT_FORMAT = "contenv-checkpoint-v1"
_CHUNK = 1 << 22


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha, self.count = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.count += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


class _OffsetReader:
    """A read-only view of a file from ``offset`` on (the payload after the header)."""

    def __init__(self, f: IO[bytes], offset: int) -> None:
        self.f, self.offset = f, offset
        f.seek(offset)

    def read(self, size: int = -1) -> bytes:
        return self.f.read(size)

    def readinto(self, buffer: Any) -> int:
        return self.f.readinto(buffer)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == os.SEEK_SET:
            pos += self.offset
        return self.f.seek(pos, whence) - self.offset

    def tell(self) -> int:
        return self.f.tell() - self.offset

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _header(digest: str, size: int) -> bytes:
    header = MAGIC + f" sha256={digest} bytes={size:020d}\n".encode()
    assert len(header) == _HEADER_LEN
    return header


def write_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (the old file stays until the new one is whole)."""
    check_finite_state(state, f"checkpoint {path}")  # the last good checkpoint stays in place
    with atomic_file(path, "w+b") as f:
        f.write(_header("0" * 64, 0))
        writer = _HashingWriter(f)
        torch.save(state, writer)
        f.seek(0)
        f.write(_header(writer.sha.hexdigest(), writer.count))


def read_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint.

    Raises:
        CheckpointError: missing, not a checkpoint, truncated, corrupt (checksum), or
            unreadable; the message names the file. The file is never modified.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    with open(path, "rb") as f:
        header = f.read(_HEADER_LEN)
        if not header.startswith(MAGIC):
            raise CheckpointError(path, f"not a contenv checkpoint (the file does not start with {MAGIC.decode()!r})")
        try:
            fields = dict(item.split("=", 1) for item in header[len(MAGIC):].decode().split())
            digest, size = fields["sha256"], int(fields["bytes"])
        except (ValueError, KeyError, UnicodeDecodeError):
            raise CheckpointError(path, "damaged checkpoint header") from None
        actual = path.stat().st_size - _HEADER_LEN
        if actual != size:
            what = "truncated" if actual < size else "has trailing data"
            raise CheckpointError(path, f"{what}: the header promises {size} bytes of data, the file holds {actual}")
        sha = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
        if sha.hexdigest() != digest:
            raise CheckpointError(path, "corrupt: the SHA-256 of the data does not match the header")
        try:
            # Our own file, verified above: full unpickling is needed for RNG states and env pickles.
            state = torch.load(_OffsetReader(f, _HEADER_LEN), map_location=map_location, weights_only=False)
        except Exception as err:  # noqa: BLE001 - torch raises many kinds
            raise CheckpointError(path, f"unreadable checkpoint data: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, "unexpected checkpoint content")
    return state


# ---------------------------------------------------------------------- what goes in


def global_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) global random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def env_state(env: gym.Env) -> dict[str, Any]:
    """The scenario env between episodes: its position and a pickle carrying the random
    streams of its task envs (ContinualEnv and Meta-World tasks pickle cheaply, without
    simulator state). An env that does not pickle keeps only its position (resume then
    is not exact, and says so)."""
    env = env.unwrapped
    state: dict[str, Any] = {"position": env.state_dict() if hasattr(env, "state_dict") else None}
    try:
        state["pickle"] = pickle.dumps(env)
    except Exception as err:  # noqa: BLE001 - any env may refuse pickling its way
        state["pickle"], state["pickle_error"] = None, f"{type(err).__name__}: {err}"
    return state


def restore_env(state: dict[str, Any], fresh_env: gym.Env) -> gym.Env:
    """The env to continue with: the pickled one when there is one (exact), else
    ``fresh_env`` moved to the saved position (with a warning: not exact)."""
    if state.get("pickle") is not None:
        env = pickle.loads(state["pickle"])
        fresh_env.close()
        return env
    warnings.warn(f"the checkpoint's env could not be pickled ({state.get('pickle_error')}); resuming at the saved "
                  "position with fresh random streams, so the resumed run will differ from an uninterrupted one",
                  stacklevel=2)
    env = fresh_env.unwrapped
    if state["position"] is not None:
        env.load_state_dict(state["position"])
    return env


def make_checkpoint(agent: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything to resume ``agent`` (an :class:`agents.sac.SAC`) and its env exactly."""
    return {
        "format": CHECKPOINT_FORMAT,
        "step": agent.num_timesteps,
        "agent": agent.training_state(),
        "env": env_state(agent.env),
        "rng": global_rng_state(),
        "extra": dict(extra or {}),
    }


def save_checkpoint(path: str | Path, agent: Any, extra: dict[str, Any] | None = None) -> None:
    """Write :func:`make_checkpoint` of ``agent`` to ``path`` (atomic, verified on read)."""
    write_checkpoint(path, make_checkpoint(agent, extra))


def load_checkpoint(path: str | Path, agent: Any) -> dict[str, Any]:
    """Restore ``agent`` (built with the run's config) and its env from ``path``.

    The agent's env is replaced by the restored one. Returns the checkpoint (its
    ``step`` and ``extra`` are what the caller needs).
    """
    state = read_checkpoint(path)  # on CPU: the agent moves what it needs to its device
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"unknown checkpoint format {state.get('format')!r} (expected {CHECKPOINT_FORMAT})")
    try:
        agent.load_training_state(state["agent"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(path, f"does not fit this agent (was the config changed?): {err}") from None
    agent.env = restore_env(state["env"], agent.env)
    set_global_rng_state(state["rng"])
    return state
