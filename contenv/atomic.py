"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Runs last for days and get killed; every file they rewrite (progress rows, configs,
checkpoints) goes through a temporary file in the same directory, fsync, ``os.replace``
and an fsync of the directory, which makes the rename itself durable. The files get the
mode a plain ``open`` would give them (0666 minus the umask, e.g. 0644), so a group on a
shared cluster filesystem can read the runs.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_file(path, "w") as f:
    ...     _ = f.write("kept whole")
    >>> path.read_text()
    'kept whole'
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def _file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: 0666 minus the umask (0644 for the usual 022)."""
    mask = os.umask(0)  # read the umask (once, at import: umask is per process, not per thread)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (not possible on every platform: then a no-op)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX; mkstemp makes 0600; run files are for the whole group to read
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
