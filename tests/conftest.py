"""Shared fixtures: small, fast scenario instances."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def cw10_tasks():
    import gymnasium as gym

    import contenv  # noqa: F401  (registers the ids)

    return list(gym.spec("contenv/CW10-v0").kwargs["tasks"])
