"""Actor-critic agents (SAC with MLP, GRU and LSTM trunks), replay and protection methods.

Importing this package sets torch to **one CPU thread** (``torch.set_num_threads(1)``):
these networks are small, and torch's default (one thread per core) makes every update
wait on thread synchronisation, about 30x slower on a shared machine than one thread.
It is left alone when ``OMP_NUM_THREADS`` is set, and ``CONTENV_TORCH_THREADS=<n>``
chooses another number (``0``: keep torch's default). ``torch.set_num_threads(n)`` after
the import overrides it, as does ``contenv train --torch-threads n``.
"""

from __future__ import annotations

import os


def _set_torch_threads() -> None:
    choice = os.environ.get("CONTENV_TORCH_THREADS")
    if choice is None and "OMP_NUM_THREADS" in os.environ:
        return
    try:
        threads = int(choice) if choice is not None else 1
    except ValueError:
        raise ValueError(f"CONTENV_TORCH_THREADS must be an integer (0: torch's default), got {choice!r}") from None
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


_set_torch_threads()
