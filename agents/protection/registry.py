"""The registry of protection methods: name -> string entry point ``"module:Class"``.

A leaf module (it imports only :mod:`agents.protection.base`; methods are loaded from their
entry points when built), so that :mod:`agents.protection.compose` can build a composite's
members by name without importing the package that builds composites.

Example:
    >>> build_protection("finetune").name
    'finetune'
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from agents.protection.base import Protection

PROTECTIONS: dict[str, str] = {
    "finetune": "agents.protection.finetune:Finetune",
    "l2": "agents.protection.l2:L2",
    "ewc": "agents.protection.ewc:EWC",
    "online-ewc": "agents.protection.ewc:OnlineEWC",
    "mas": "agents.protection.mas:MAS",
    "si": "agents.protection.si:SI",
    "packnet": "agents.protection.packnet:PackNet",
    "hnet": "agents.protection.hnet:HyperNetwork",
    "replay": "agents.protection.replay:Replay",
    "agem": "agents.protection.agem:AGEM",
    "vcl": "agents.protection.vcl:VCL",
    "clonex": "agents.protection.clonex:ClonEx",
    "composite": "agents.protection.compose:Composite",
    # plasticity (issue 12)
    "cbp": "agents.protection.cbp:ContinualBackprop",
    "shrink-perturb": "agents.protection.shrink_perturb:ShrinkPerturb",
    "l2-init": "agents.protection.l2_init:L2Init",
    "redo": "agents.protection.redo:ReDo",
    "reset-last": "agents.protection.reset_last:ResetLast",
}
__all__ = ["PROTECTIONS", "build_protection", "register_protection"]


def register_protection(name: str, entry_point: str) -> None:
    """Make ``name`` buildable: ``entry_point`` is ``"package.module:Class"``."""
    if ":" not in entry_point:
        raise ValueError(f"entry point must look like 'package.module:Class', got {entry_point!r}")
    PROTECTIONS[name] = entry_point


def build_protection(name: str, **kwargs: Any) -> Protection:
    """Build the single (not ``"a+b"``) protection method ``name`` with its keyword arguments.

    Raises:
        ValueError: ``name`` is not a known method (the error lists the allowed names
            and the closest matches).
    """
    if name not in PROTECTIONS:
        close = difflib.get_close_matches(str(name), list(PROTECTIONS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown protection {name!r}.{hint} Available: {', '.join(sorted(PROTECTIONS))}, "
                         "or two joined by '+' (e.g. replay+ewc).")
    module_name, _, class_name = PROTECTIONS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"bad arguments for protection {name!r}: {err}") from None
