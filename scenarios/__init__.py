"""Scenario definitions as data.

Every ``scenarios/*.json`` file defines one registered id::

    {"id": "contenv/CW10-v0", "description": "...", "source": "...",
     "entry_point": "contenv.continual:ContinualEnv",   # optional, this is the default
     "kwargs": {"tasks": [...], "steps_per_task": 1000000, "horizon": 200, ...}}

The kwargs are the protocol defaults; every one of them can be overridden in
``gym.make(id, **kwargs)`` and is recorded in ``env.spec``.

Example:
    >>> from scenarios import load_scenarios
    >>> cw10 = load_scenarios()["contenv/CW10-v0"]
    >>> cw10.kwargs["tasks"][:2], cw10.kwargs["steps_per_task"]
    (['hammer-v3', 'push-wall-v3'], 1000000)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

DEFAULT_ENTRY_POINT = "contenv.continual:ContinualEnv"


@dataclass(frozen=True)
class Scenario:
    """One registered scenario id and its protocol defaults."""

    id: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    entry_point: str = DEFAULT_ENTRY_POINT
    source: str = ""


def load_scenarios() -> dict[str, Scenario]:
    """Every scenario defined in this package, by id."""
    out: dict[str, Scenario] = {}
    for item in sorted(resources.files(__name__).iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".json"):
            continue
        data = json.loads(item.read_text())
        try:
            scenario = Scenario(
                id=data["id"],
                description=data.get("description", ""),
                kwargs=data.get("kwargs", {}),
                entry_point=data.get("entry_point", DEFAULT_ENTRY_POINT),
                source=data.get("source", ""),
            )
        except KeyError as err:
            raise ValueError(f"scenario file {item.name} lacks the key {err}") from err
        if scenario.id in out:
            raise ValueError(f"scenario id {scenario.id} is defined twice (second time in {item.name})")
        out[scenario.id] = scenario
    return out


def load_data(name: str) -> Any:
    """A JSON data file from ``scenarios/data/`` (e.g. ``"cw_triplets"``)."""
    return json.loads(resources.files(__name__).joinpath("data", f"{name}.json").read_text())
