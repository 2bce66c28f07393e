"""Moved to :mod:`contenv.evaluation.sb3`; this old import path re-exports its names."""

from contenv.evaluation.sb3 import *  # noqa: F401,F403
from contenv.evaluation.sb3 import __all__  # noqa: F401


def __getattr__(name: str):
    import contenv.evaluation.sb3 as moved

    return getattr(moved, name)
