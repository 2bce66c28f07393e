"""Registers every scenario of ``scenarios/*.json`` with Gymnasium.

Entry points are strings, so ``env.spec`` serialises and ``gym.make(env.spec)``
rebuilds the same scenario.

Example:
    >>> import gymnasium as gym, contenv
    >>> gym.spec("contenv/CW10-v0").kwargs["steps_per_task"]
    1000000
"""

from __future__ import annotations

import gymnasium as gym

from scenarios import load_scenarios


def register_scenarios() -> list[str]:
    """Register (or re-register) every scenario id; returns the ids."""
    ids = []
    for scenario in load_scenarios().values():
        if scenario.id in gym.registry:
            del gym.registry[scenario.id]
        gym.register(id=scenario.id, entry_point=scenario.entry_point, kwargs=dict(scenario.kwargs))
        ids.append(scenario.id)
    return ids


def registered_ids() -> list[str]:
    """Every contenv id currently registered."""
    return sorted(env_id for env_id in gym.registry if env_id.startswith("contenv/"))
