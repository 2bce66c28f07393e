"""Moved to :mod:`contenv.evaluation.episode_pool`; this old import path re-exports its names."""

from contenv.evaluation.episode_pool import *  # noqa: F401,F403
from contenv.evaluation.episode_pool import __all__  # noqa: F401


def __getattr__(name: str):
    import contenv.evaluation.episode_pool as moved

    return getattr(moved, name)
