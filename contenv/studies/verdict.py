"""Verdicts: does a measured outcome, with its confidence interval, support a claim?

Pure functions over estimates ``(value, lo, hi)`` (a :class:`~contenv.evaluation.metrics.Estimate`
or any triple of numbers). Each returns a :class:`Verdict`: ``holds``, ``fails`` or
``inconclusive``, with the reason in plain words and the numbers behind it. The rule is the
same everywhere: a claim holds or fails only when the 90 % bootstrap CIs separate; overlapping
CIs (or a CI that straddles 0) leave it inconclusive at that budget. A missing (NaN) number is
inconclusive too.

Claim types:

- :func:`above_zero` / :func:`below_zero`: the sign of one quantity (a difference, a trend,
  Kendall's tau);
- :func:`greater`: one quantity above another;
- :func:`best`: one method above every other;
- :func:`reaches`: a quantity reaches a target and stands clear of a floor (transfer on C
  against FT(A -> C) and FT(B -> C));
- :func:`combine`: several verdicts as one (any fails: fails; all hold: holds).

Example:
    >>> print(above_zero("tau > 0", "tau", (0.4, 0.1, 0.6)))
    holds: tau > 0 (tau = 0.40 [0.10, 0.60], above 0)
    >>> print(greater("a beats b", "a", (0.5, 0.3, 0.7), "b", (0.4, 0.2, 0.6)))
    inconclusive: a beats b (the CIs overlap: a 0.50 [0.30, 0.70], b 0.40 [0.20, 0.60])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
OUTCOMES = (HOLDS, FAILS, INCONCLUSIVE)

__all__ = ["HOLDS", "FAILS", "INCONCLUSIVE", "OUTCOMES", "Verdict", "interval", "fmt", "above_zero", "below_zero",
           "greater", "best", "reaches", "combine"]


@dataclass(frozen=True)
class Verdict:
    """A claim, the outcome (``holds``, ``fails``, ``inconclusive``) and why."""

    claim: str
    outcome: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; outcomes: {', '.join(OUTCOMES)}")

    def __str__(self) -> str:
        return f"{self.outcome}: {self.claim} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "outcome": self.outcome, "reason": self.reason, "numbers": self.numbers}


def interval(estimate: Any) -> tuple[float, float, float]:
    """``(value, lo, hi)`` as floats from an Estimate (tensors) or any triple.

    Example:
        >>> interval((1, 0, 2))
        (1.0, 0.0, 2.0)
    """
    value, lo, hi = (float(x) for x in estimate)
    return value, lo, hi


def fmt(estimate: Any, digits: int = 2) -> str:
    """``"0.40 [0.10, 0.60]"``.

    Example:
        >>> fmt((0.4, 0.1, 0.6))
        '0.40 [0.10, 0.60]'
    """
    value, lo, hi = interval(estimate)
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _record(**estimates: Any) -> dict[str, Any]:
    return {name: dict(zip(("value", "lo", "hi"), interval(est))) for name, est in estimates.items()}


def _missing(*estimates: Any) -> bool:
    return any(not all(math.isfinite(x) for x in interval(est)) for est in estimates)


def _sign(claim: str, name: str, estimate: Any, expected: str) -> Verdict:
    numbers = _record(**{name: estimate})
    if _missing(estimate):
        return Verdict(claim, INCONCLUSIVE, f"{name} could not be measured", numbers)
    _, lo, hi = interval(estimate)
    shown = f"{name} = {fmt(estimate)}"
    side = "above" if lo > 0 else "below" if hi < 0 else None
    if side is None:
        return Verdict(claim, INCONCLUSIVE, f"{shown}: the 90 % CI straddles 0", numbers)
    return Verdict(claim, HOLDS if side == expected else FAILS, f"{shown}, {side} 0", numbers)


def above_zero(claim: str, name: str, estimate: Any) -> Verdict:
    """Holds when the CI lies above 0, fails when it lies below, else inconclusive.

    Example:
        >>> above_zero("x > 0", "x", (-0.3, -0.5, -0.1)).outcome
        'fails'
    """
    return _sign(claim, name, estimate, "above")


def below_zero(claim: str, name: str, estimate: Any) -> Verdict:
    """Holds when the CI lies below 0, fails when it lies above, else inconclusive.

    Example:
        >>> print(below_zero("x < 0", "x", (-0.3, -0.5, -0.1)))
        holds: x < 0 (x = -0.30 [-0.50, -0.10], below 0)
    """
    return _sign(claim, name, estimate, "below")


def greater(claim: str, a_name: str, a: Any, b_name: str, b: Any) -> Verdict:
    """Holds when a's CI lies wholly above b's, fails when wholly below, else inconclusive.

    Example:
        >>> greater("a > b", "a", (0.9, 0.8, 1.0), "b", (0.1, 0.0, 0.2)).outcome
        'holds'
    """
    numbers = _record(**{a_name: a, b_name: b})
    if _missing(a, b):
        return Verdict(claim, INCONCLUSIVE, f"{a_name} or {b_name} could not be measured", numbers)
    shown = f"{a_name} {fmt(a)}, {b_name} {fmt(b)}"
    if interval(a)[1] > interval(b)[2]:
        return Verdict(claim, HOLDS, f"{shown}: the CIs separate", numbers)
    if interval(a)[2] < interval(b)[1]:
        return Verdict(claim, FAILS, f"{shown}: the CIs separate the other way", numbers)
    return Verdict(claim, INCONCLUSIVE, f"the CIs overlap: {shown}", numbers)


def best(claim: str, name: str, estimates: Mapping[str, Any]) -> Verdict:
    """Holds when ``name``'s CI lies above every other's; fails when another's lies wholly
    above it; else inconclusive.

    Example:
        >>> best("h is best", "h", {"h": (0.9, 0.8, 1.0), "f": (0.5, 0.4, 0.85)}).outcome
        'inconclusive'
    """
    numbers = _record(**estimates)
    if name not in estimates:
        return Verdict(claim, INCONCLUSIVE, f"{name} was not measured", numbers)
    others = {k: v for k, v in estimates.items() if k != name and not _missing(v)}
    if _missing(estimates[name]) or not others:
        return Verdict(claim, INCONCLUSIVE, f"{name} or the others could not be measured", numbers)
    _, lo, hi = interval(estimates[name])
    above = sorted(k for k, v in others.items() if interval(v)[1] > hi)
    if above:
        return Verdict(claim, FAILS, f"{', '.join(above)} above {name} ({fmt(estimates[name])}), CIs separate", numbers)
    close = sorted(k for k, v in others.items() if interval(v)[2] >= lo)
    if close:
        shown = ", ".join(f"{k} {fmt(others[k])}" for k in close)
        return Verdict(claim, INCONCLUSIVE, f"{name} {fmt(estimates[name])} overlaps {shown}", numbers)
    runner = max(others, key=lambda k: interval(others[k])[0])
    return Verdict(claim, HOLDS, f"{name} {fmt(estimates[name])} above every other CI (next: {runner} "
                   f"{fmt(others[runner])})", numbers)


def reaches(claim: str, name: str, estimate: Any, target_name: str, target: Any, floor_name: str,
            floor: Any) -> Verdict:
    """Holds when ``estimate`` is not below the target (its CI reaches the target's) and lies
    clear above the floor; fails when its CI lies wholly below the target's; inconclusive
    otherwise, including when target and floor overlap (the two cannot be told apart).

    Example:
        >>> reaches("C keeps A's transfer", "FT(C)", (0.6, 0.5, 0.7), "FT(A->C)", (0.65, 0.55, 0.75),
        ...         "FT(B->C)", (0.1, 0.0, 0.2)).outcome
        'holds'
    """
    numbers = _record(**{name: estimate, target_name: target, floor_name: floor})
    if _missing(estimate, target, floor):
        return Verdict(claim, INCONCLUSIVE, "a quantity could not be measured", numbers)
    (_, lo, hi), (_, t_lo, t_hi), (_, f_lo, f_hi) = interval(estimate), interval(target), interval(floor)
    shown = f"{name} {fmt(estimate)}, {target_name} {fmt(target)}, {floor_name} {fmt(floor)}"
    if hi < t_lo:
        return Verdict(claim, FAILS, f"{shown}: below the target, CIs separate", numbers)
    if t_lo <= f_hi:
        return Verdict(claim, INCONCLUSIVE, f"{shown}: target and floor overlap, so this sequence cannot tell "
                       f"what survived of the first task from what the distractor gives", numbers)
    if lo > f_hi:
        return Verdict(claim, HOLDS, f"{shown}: reaches the target and stands clear of the floor", numbers)
    return Verdict(claim, INCONCLUSIVE, f"{shown}: the CI reaches both the target and the floor", numbers)


def combine(claim: str, verdicts: Iterable[Verdict]) -> Verdict:
    """One verdict of several: fails if any fails, holds if all hold, else inconclusive.

    Example:
        >>> parts = [above_zero("x", "x", (1, 0.5, 2)), above_zero("y", "y", (1, -1, 2))]
        >>> combine("both", parts).outcome
        'inconclusive'
    """
    parts: Sequence[Verdict] = list(verdicts)
    if not parts:
        return Verdict(claim, INCONCLUSIVE, "nothing was measured")
    failed = [v.claim for v in parts if v.outcome == FAILS]
    if failed:
        return Verdict(claim, FAILS, f"fails for: {'; '.join(failed)}")
    open_ = [v.claim for v in parts if v.outcome == INCONCLUSIVE]
    if open_:
        return Verdict(claim, INCONCLUSIVE, f"{len(parts) - len(open_)} of {len(parts)} parts hold; inconclusive: "
                       + "; ".join(open_))
    return Verdict(claim, HOLDS, f"all {len(parts)} parts hold")
