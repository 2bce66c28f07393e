"""Several protection methods at once (e.g. replay + EWC), and which mixtures make sense.

:class:`Composite` runs its members' hooks in the order given: task starts and ends one
after the other, losses summed, ``after_backward`` chained (each member edits the
gradient the previous one left), ``after_step`` chained likewise (each member
edits the weights the previous one left), the first member's task weights (and exploration task) that are not None,
every member's extra trainable tensors. Its state is every member's name and state, so
``SAC.load`` (which rebuilds a method by name) restores the whole mixture.

:func:`check_combination` refuses mixtures that fight each other or do nothing:

- the same method twice;
- two methods that own the actor's weights (``packnet``, ``hnet``): each decides on its
  own which weights a task runs with;
- two importance regularisers (``l2``, ``ewc``, ``online-ewc``, ``mas``, ``si``): the same anchor
  weighted twice; pick one (online EWC with ``gamma=1`` is EWC);
- a weight owner with an importance regulariser: HNET's actor weights are generated,
  so a penalty on the actor's own tensors regularises nothing that is used; PackNet
  already freezes old tasks' weights exactly, and a pull towards the anchor fights its
  pruning and retraining of the free ones;
- a weight owner with a plasticity method (``cbp``, ``shrink-perturb``, ``l2-init``,
  ``redo``, ``reset-last``): these rewrite or pull the actor's own weights, which the
  owner either does not use (HNET) or keeps frozen for old tasks (PackNet);
- ``cbp`` with ``redo``: both recycle units of the same layers on their own schedule;
- a weight owner with ``agem`` or ``replay``: the agent runs every replayed row with the
  *current* task's weights, so old tasks' data would train the current task's weights
  (for HNET, its current embedding) while each old task keeps weights of its own; and
  A-GEM's projection would undo PackNet's gradient masks.

Everything else composes, e.g. ``replay`` (either mode) with one regulariser, ``agem``
with a regulariser, ``agem`` with ``replay``, a plasticity method with a regulariser
(``cbp+ewc``). ``finetune`` adds nothing and is allowed.

Example:
    >>> check_combination(["replay", "ewc"])
    >>> check_combination(["ewc", "online-ewc"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: protections ewc and online-ewc do not combine: both are importance regularisers ...; keep one
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from torch import Tensor

from agents.protection.base import Protection, defines
from agents.protection.registry import build_protection

if TYPE_CHECKING:  # pragma: no cover
    from agents.protection.base import Agent
    from agents.replay import Batch

WEIGHT_OWNERS = ("packnet", "hnet")
REGULARISERS = ("l2", "ewc", "online-ewc", "mas", "si", "vcl")
REPLAYS = ("agem", "replay", "clonex")
PLASTICITY = ("cbp", "shrink-perturb", "l2-init", "redo", "reset-last")
RECYCLERS = ("cbp", "redo")


def _conflict(a: str, b: str) -> str | None:
    """Why methods ``a`` and ``b`` do not combine (None: they do)."""
    kinds = {a: set(), b: set()}
    for name in (a, b):
        for kind, members in (("owner", WEIGHT_OWNERS), ("regulariser", REGULARISERS), ("replay", REPLAYS),
                              ("plasticity", PLASTICITY)):
            if name in members:
                kinds[name].add(kind)
    pair = kinds[a] | kinds[b]
    if a == b:
        return "the same method twice"
    if kinds[a] == kinds[b] == {"owner"}:
        return "both decide which actor weights each task runs with"
    if kinds[a] == kinds[b] == {"regulariser"}:
        return "both are importance regularisers of the same actor weights (same anchor weighted twice); keep one"
    if {a, b} <= set(RECYCLERS):
        return "both recycle units of the same layers on their own schedules; keep one"
    if pair == {"owner", "plasticity"}:
        return ("the plasticity method rewrites or pulls the actor's own weights, which the weight owner does not "
                "use (HNET generates them) or keeps frozen for old tasks (PackNet)")
    if pair == {"owner", "regulariser"}:
        return ("the weight owner already keeps old tasks' weights (HNET generates them, PackNet freezes them); "
                "a penalty on the actor's own weights is redundant or fights it")
    if pair == {"owner", "replay"}:
        return ("the agent runs replayed old-task rows with the current task's weights, so old data would train "
                "them while each old task keeps weights of its own (and A-GEM's projection undoes PackNet's masks)")
    return None


def check_combination(names: Iterable[str]) -> None:
    """Raise a ValueError naming the first pair of ``names`` that does not combine.

    Names not known here (user methods) are accepted.
    """
    names = list(names)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            reason = _conflict(a, b)
            if reason is not None:
                raise ValueError(f"protections {a} and {b} do not combine: {reason}")


class Composite(Protection):
    """Run several protection methods as one.

    Args:
        methods: members in hook order: method objects, registered names, or one string
            ``"replay+ewc"``.
        **kwargs: per-member arguments by name, for members given by name, e.g.
            ``Composite("replay+ewc", replay={"mode": "bc"}, ewc={"coefficient": 1e3})``.

    Example:
        >>> from agents.protection.l2 import L2
        >>> from agents.protection.replay import Replay
        >>> both = Composite([Replay(mode="bc"), L2(coefficient=1.0)])
        >>> both.names
        ['replay', 'l2']
        >>> state = both.state_dict()
        >>> [name for name, _ in state["members"]]
        ['replay', 'l2']
    """

    name = "composite"

    def __init__(self, methods: Iterable[Protection | str] | str = (), **kwargs: dict[str, Any]) -> None:
        if isinstance(methods, str):
            methods = [m for m in methods.split("+") if m]
        members = [build_protection(m, **kwargs.pop(m, {})) if isinstance(m, str) else m for m in methods]
        if kwargs:
            raise ValueError(f"arguments for {sorted(kwargs)}, which are not members given by name")
        self.members: list[Protection] = []
        self._set_members(members)

    def _set_members(self, members: list[Protection]) -> None:
        check_combination(getattr(m, "name", type(m).__name__) for m in members)
        self.members = list(members)

    @property
    def names(self) -> list[str]:
        return [getattr(m, "name", type(m).__name__) for m in self.members]

    def _with(self, hook: str) -> list[Protection]:
        return [m for m in self.members if defines(m, hook)]

    def setup(self, agent: "Agent") -> None:
        for member in self._with("setup"):
            member.setup(agent)

    def on_task_start(self, agent: "Agent", task: int) -> None:
        for member in self._with("on_task_start"):
            member.on_task_start(agent, task)

    def on_task_end(self, agent: "Agent", task: int) -> None:
        for member in self._with("on_task_end"):
            member.on_task_end(agent, task)

    def loss(self, agent: "Agent", batch: "Batch") -> Tensor | None:
        losses = [loss for m in self._with("loss") if (loss := m.loss(agent, batch)) is not None]
        return sum(losses[1:], losses[0]) if losses else None

    def after_backward(self, agent: "Agent") -> None:
        for member in self._with("after_backward"):
            member.after_backward(agent)

    def after_step(self, agent: "Agent") -> None:
        for member in self._with("after_step"):
            member.after_step(agent)

    def task_parameters(self, agent: "Agent", task: int) -> dict[str, Tensor] | None:
        for member in self._with("task_parameters"):
            params = member.task_parameters(agent, task)
            if params is not None:
                return params
        return None

    def exploration_task(self, agent: "Agent", task: int) -> int | None:
        for member in self._with("exploration_task"):
            chosen = member.exploration_task(agent, task)
            if chosen is not None:
                return chosen
        return None

    def trainable_parameters(self, agent: "Agent") -> list[Tensor]:
        return [p for member in self._with("trainable_parameters") for p in member.trainable_parameters(agent)]

    def state_dict(self) -> dict[str, Any]:
        return {"members": [(name, member.state_dict()) for name, member in zip(self.names, self.members)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load every member's state; an empty composite (as ``SAC.load`` makes it) first
        builds its members by name from the registry."""
        names = [name for name, _ in state["members"]]
        if not self.members:
            self._set_members([build_protection(name) for name in names])
        if names != self.names:
            raise ValueError(f"composite state of {names} cannot load into a composite of {self.names}")
        for member, (_, member_state) in zip(self.members, state["members"]):
            member.load_state_dict(member_state)
