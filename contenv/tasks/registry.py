"""Task names -> single-task environments.

A *task spec* names one task of a sequence. It is either a plain name (``"hammer-v3"``,
``"copy"``) or a name with dial values in parentheses (``"copy(p=3,i=10)"``), so that a
whole sequence stays a JSON list of strings and every ``env.spec`` serialises.

Task families register a factory for the names they own. Every factory receives the
dials parsed from the spec plus the scenario-wide options (``horizon``,
``reward_version``), and returns a ``gymnasium.Env`` with

- a 1-D ``Box`` observation space (float32),
- the unified action space ``Box(-1, 1, (4,))`` (Meta-World's),
- ``info["success"]`` (bool) on every step, and, for tasks with a graded outcome,
  ``info["score"]`` in [0, 1] on the last step of an episode.

Example:
    >>> from contenv.tasks.registry import parse_task_spec, format_task_spec
    >>> parse_task_spec("copy(p=3, i=10)")
    ('copy', {'p': 3, 'i': 10})
    >>> format_task_spec("copy", {"i": 10, "p": 3})
    'copy(i=10,p=3)'
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import gymnasium as gym

TaskFactory = Callable[..., gym.Env]

_SPEC_PATTERN = re.compile(r"^\s*([A-Za-z0-9_./:-]+)\s*(?:\((.*)\))?\s*$")


@dataclass(frozen=True)
class TaskFamily:
    """A family of tasks that share one factory.

    Attributes:
        name: short family name shown in errors (``"metaworld"``, ``"memory"``).
        names: the task names this family owns (exact matches).
        factory: ``factory(task_name, params: dict, *, horizon, reward_version) -> gym.Env``.
        prefix: names starting with this prefix also belong to the family (``"popgym/"``).
    """

    name: str
    names: tuple[str, ...]
    factory: TaskFactory
    prefix: str | None = None

    def owns(self, task_name: str) -> bool:
        return task_name in self.names or (self.prefix is not None and task_name.startswith(self.prefix))


_FAMILIES: list[TaskFamily] = []

# Each module registers its family on import.
_BUILTIN_FAMILY_MODULES = ("contenv.tasks.metaworld", "contenv.tasks.memory", "contenv.tasks.popgym")


def register_task_family(family: TaskFamily) -> None:
    """Add a family; a family of the same name is replaced (re-imports stay harmless)."""
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != family.name]
    _FAMILIES.append(family)


def _ensure_builtin_families() -> None:
    # Imported lazily so that `import contenv` stays cheap and families never import each other.
    import importlib

    for module in _BUILTIN_FAMILY_MODULES:
        importlib.import_module(module)


def known_task_names() -> list[str]:
    """Every task name that a sequence may use (families with a prefix show the prefix)."""
    _ensure_builtin_families()
    names: list[str] = []
    for family in _FAMILIES:
        names.extend(family.names)
        if family.prefix:
            names.append(family.prefix + "<name>")
    return names


def parse_task_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name(k=v, ...)"`` into the name and a dict of literal dial values.

    Raises:
        ValueError: the spec is not of that form, or a value is not a Python literal.
    """
    if not isinstance(spec, str):
        raise TypeError(f"a task spec is a string such as 'hammer-v3' or 'copy(p=3,i=10)', got {spec!r}")
    match = _SPEC_PATTERN.match(spec)
    if match is None:
        raise ValueError(f"malformed task spec {spec!r}: expected 'name' or 'name(key=value, ...)'")
    name, body = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    if body and body.strip():
        for item in body.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip().isidentifier():
                raise ValueError(f"malformed dial {item.strip()!r} in task spec {spec!r}: expected key=value")
            try:
                params[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"dial {key.strip()!r} in task spec {spec!r} is not a literal: {value.strip()!r}") from err
    return name, params


def format_task_spec(name: str, params: dict[str, Any] | None = None) -> str:
    """The canonical spec string: dials sorted by key, no spaces."""
    if not params:
        return name
    return name + "(" + ",".join(f"{k}={params[k]!r}" for k in sorted(params)) + ")"


def find_family(task_name: str) -> TaskFamily:
    """The family that owns ``task_name``; an error listing close matches otherwise."""
    _ensure_builtin_families()
    for family in _FAMILIES:
        if family.owns(task_name):
            return family
    raise unknown_name_error("task", task_name, known_task_names())


def make_task(spec: str, *, horizon: int = 200, reward_version: str = "v2") -> gym.Env:
    """Build the single-task env of one spec (no padding, no task id)."""
    name, params = parse_task_spec(spec)
    family = find_family(name)
    return family.factory(name, params, horizon=horizon, reward_version=reward_version)


def canonical_spec(spec: str) -> str:
    """Normalise a spec string (validates the name too)."""
    name, params = parse_task_spec(spec)
    find_family(name)
    return format_task_spec(name, params)


def unknown_name_error(kind: str, name: str, allowed: Iterable[str]) -> ValueError:
    """A ValueError naming the close matches of ``name`` among ``allowed``."""
    allowed = list(allowed)
    close = difflib.get_close_matches(name, allowed, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listing = ", ".join(sorted(allowed)) if len(allowed) <= 80 else f"{len(allowed)} names (see contenv.tasks.registry.known_task_names())"
    return ValueError(f"unknown {kind} {name!r}.{hint} Allowed: {listing}.")


def check_dials(task_name: str, params: dict[str, Any], allowed: dict[str, Any]) -> dict[str, Any]:
    """Merge dial values over defaults; an error names unknown dials and the allowed ones."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"task {task_name!r} has no dial(s) {', '.join(unknown)}; allowed dials: "
            + ", ".join(f"{k} (default {v!r})" for k, v in allowed.items())
        )
    return {**allowed, **params}
