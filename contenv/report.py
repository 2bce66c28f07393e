"""Moved to :mod:`contenv.evaluation.report`; this old import path re-exports its names."""

from contenv.evaluation.report import *  # noqa: F401,F403
from contenv.evaluation.report import __all__  # noqa: F401


def __getattr__(name: str):
    import contenv.evaluation.report as moved

    return getattr(moved, name)
