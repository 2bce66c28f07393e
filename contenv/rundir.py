"""Moved to :mod:`contenv.evaluation.rundir`; this old import path re-exports its names."""

from contenv.evaluation.rundir import *  # noqa: F401,F403
from contenv.evaluation.rundir import __all__  # noqa: F401


def __getattr__(name: str):
    import contenv.evaluation.rundir as moved

    return getattr(moved, name)
