"""Fine-tuning: no protection at all (the lower bound of the CW table).

Example:
    >>> from agents.protection.base import defines
    >>> any(defines(Finetune(), hook) for hook in ("loss", "on_task_end", "task_parameters"))
    False
"""

from __future__ import annotations

from agents.protection.base import Protection


class Finetune(Protection):
    """The empty protection: the agent simply keeps training on each new task."""

    name = "finetune"
