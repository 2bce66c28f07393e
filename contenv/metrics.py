"""Moved to :mod:`contenv.evaluation.metrics`; this old import path re-exports its names."""

from contenv.evaluation.metrics import *  # noqa: F401,F403
from contenv.evaluation.metrics import __all__  # noqa: F401


def __getattr__(name: str):
    import contenv.evaluation.metrics as moved

    return getattr(moved, name)
