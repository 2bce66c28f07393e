"""Protection methods against forgetting, by name.

``make_protection(name, **kwargs)`` builds one. Methods are registered as string entry
points (``"module:Class"``) so that importing this package stays cheap. ``"a+b"`` builds
a :class:`~agents.protection.compose.Composite` of both (e.g. ``"replay+ewc"``); the
keyword arguments are then per member (``replay={"mode": "bc"}``), and combinations
that do not make sense are refused.

Example:
    >>> make_protection("finetune").name
    'finetune'
    >>> make_protection("replay+ewc").names
    ['replay', 'ewc']
    >>> make_protection("fintune")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown protection 'fintune'. Did you mean: finetune? Available: ...finetune...
"""

from __future__ import annotations

from typing import Any

from agents.protection.base import HOOKS, Protection, defines
from agents.protection.compose import Composite, check_combination
from agents.protection.registry import PROTECTIONS, build_protection, register_protection

__all__ = ["HOOKS", "PROTECTIONS", "Protection", "defines", "make_protection", "register_protection"]


def make_protection(name: str, **kwargs: Any) -> Protection:
    """Build the protection method ``name`` with its keyword arguments.

    Raises:
        ValueError: ``name`` is not a known method (the error lists the allowed names
            and the closest matches), or a combination that does not make sense.
    """
    if isinstance(name, str) and "+" in name:
        check_combination(name.split("+"))
        return Composite(name, **kwargs)
    return build_protection(name, **kwargs)
