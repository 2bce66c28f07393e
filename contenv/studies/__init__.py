"""Studies: the findings this suite exists to test, each one command (``contenv study NAME``).

A study expands into resumable ``contenv train`` runs, then reads them back and writes a
report with a verdict on a published claim (:mod:`contenv.studies.common`). One module per
study, loaded by name:

- ``memory-load``: memory load vs sequence length for weight-importance methods (Ehret et al. 2021);
- ``cw-order``: Continual World's ordering of methods (Wolczyk et al. 2021, 2022);
- ``plasticity``: learning speed on late tasks, fine-tuning vs continual backprop (Dohare et al. 2024);
- ``distractor``: does A's transfer to C survive a distractor B (Wolczyk et al. 2022)?

Example:
    >>> get_study("plasticity").name
    'plasticity'
    >>> get_study("memory")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown study 'memory'; studies: memory-load, cw-order, plasticity, distractor
"""

from __future__ import annotations

import importlib

from contenv.studies.common import Study

STUDIES = {
    "memory-load": "contenv.studies.memory_load",
    "cw-order": "contenv.studies.cw_order",
    "plasticity": "contenv.studies.plasticity",
    "distractor": "contenv.studies.distractor",
}

__all__ = ["STUDIES", "Study", "get_study"]


def get_study(name: str) -> Study:
    """The study called ``name``; an error listing the studies otherwise."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    return importlib.import_module(STUDIES[name]).STUDY
