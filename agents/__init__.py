"""Actor-critic agents (SAC with MLP, GRU and LSTM trunks), replay and protection methods.

Importing this package sets torch to **one CPU thread** (``torch.set_num_threads(1)``):
these networks are small, and torch's default (one thread per core) makes every update
wait on thread synchronisation, about 30x slower on a shared machine than one thread.
It is left alone when ``OMP_NUM_THREADS`` is set, and ``CONTENV_TORCH_THREADS=<n>``
chooses another number (``0``: keep torch's default). ``torch.set_num_threads(n)`` after
the import overrides it, as does ``contenv train --torch-threads n``.

Layout: the agents (``sac``, ``population``, ``multitask``), their replay (``replay``), their
networks and kernels (``nets/``), the run machinery (``training/``) and the protection methods
(``protection/``). Modules that moved into ``nets/`` and ``training/`` still import from their
old paths (``agents.networks`` is ``agents.nets.networks``), with a ``DeprecationWarning``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

# Old module path -> new one (moved when populations came, issue 21).
MOVED = {
    **{f"agents.{name}": f"agents.nets.{name}" for name in ("networks", "stacked", "rnn_kernels", "scan_cell", "units")},
    **{f"agents.{name}": f"agents.training.{name}"
       for name in ("run", "run_common", "population_run", "checkpoint", "finite", "plasticity")},
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an old module path as the very module object of its new path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; import it from there", DeprecationWarning,
                      stacklevel=3)
        module = importlib.import_module(MOVED[spec.name])
        self._own = (module.__spec__, module.__loader__)
        return module

    def exec_module(self, module):
        # Already executed under its new name; the import system filed it under the old one too and
        # put the old spec on it: give it back its own.
        module.__spec__, module.__loader__ = self._own


sys.meta_path.append(_MovedModuleFinder())


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
