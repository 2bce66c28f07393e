"""Rank agreement: Kendall's tau-b between two orderings of methods, with a bootstrap CI over seeds.

Kendall's tau-b (Kendall 1945) counts, over all pairs ``i < j``, whether two scores order the
pair the same way: with ``s = sign(x_i - x_j) * sign(y_i - y_j)``,

    tau_b = sum s / sqrt((n0 - n1) (n0 - n2))

where ``n0 = n (n - 1) / 2`` and ``n1``, ``n2`` count the pairs tied in ``x`` and in ``y``
(``n0 - n1`` is the sum of ``sign(x_i - x_j)^2``). 1: the same order, -1: reversed, 0: unrelated.
Ties count in neither direction, and the denominator corrects for them (tau-b, what
``scipy.stats.kendalltau`` computes by default). It is undefined (NaN) when all of ``x`` or all
of ``y`` are tied.

:func:`rank_agreement` compares our methods' mean metric with published values: tau-b of the
per-method means, and a CI from resampling every method's seeds independently (like the
bootstrap of :mod:`contenv.evaluation.metrics`) while the published values stay fixed.

Example:
    >>> import torch
    >>> round(kendall_tau_b(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])).item(), 4)
    0.3333
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from contenv.evaluation import metrics
from contenv.evaluation.metrics import Estimate

__all__ = ["kendall_tau_b", "rank_agreement"]


def kendall_tau_b(x: Tensor, y: Tensor) -> Tensor:
    """Kendall's tau-b over the last dim, ``[..., n]`` and ``[..., n]`` (broadcast) -> ``[...]``.

    Example:
        >>> kendall_tau_b(torch.tensor([[1.0, 2, 3], [3, 2, 1]]), torch.tensor([1.0, 2, 3])).tolist()
        [1.0, -1.0]
        >>> round(kendall_tau_b(torch.tensor([1.0, 1, 2]), torch.tensor([1.0, 2, 3])).item(), 4)  # a tie in x
        0.8165
    """
    x, y = torch.broadcast_tensors(x.double(), y.double().to(x.device))
    n = x.shape[-1]
    if n < 2:
        raise ValueError(f"Kendall's tau needs at least 2 items, got {n}")
    upper = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(diagonal=1)  # pairs i < j
    sx = torch.sign(x[..., :, None] - x[..., None, :])[..., upper]
    sy = torch.sign(y[..., :, None] - y[..., None, :])[..., upper]
    denominator = (sx.square().sum(-1) * sy.square().sum(-1)).sqrt()
    return (sx * sy).sum(-1) / denominator  # 0 / 0 = NaN when one side is all ties


def rank_agreement(ours: Mapping[str, Tensor], published: Mapping[str, float],
                   num_resamples: int = metrics.NUM_RESAMPLES, confidence: float = metrics.CONFIDENCE,
                   seed: int = 0) -> Estimate:
    """tau-b between the per-method means of ``ours`` (per-seed values ``[S_m]``) and ``published``,
    with a percentile bootstrap CI over seeds (each method's seeds resampled on their own).

    Methods missing from either side are left out; at least two must remain.

    Example:
        >>> ours = {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([0.5, 0.6]), "c": torch.tensor([0.9, 1.0])}
        >>> est = rank_agreement(ours, {"a": 0.0, "b": 0.4, "c": 0.8})
        >>> est.value.item(), est.lo.item(), est.hi.item()
        (1.0, 1.0, 1.0)
    """
    methods = [m for m in ours if m in published]
    if len(methods) < 2:
        raise ValueError(f"rank agreement needs at least 2 methods measured and published, got {methods}")
    reference = torch.tensor([float(published[m]) for m in methods], dtype=torch.float64)
    samples = [ours[m].double().flatten() for m in methods]

    def statistic(*resampled: Tensor) -> Tensor:  # each [B, S_m] -> tau [B]
        return kendall_tau_b(torch.stack([r.mean(1) for r in resampled], dim=-1), reference)

    value = statistic(*(s[None] for s in samples))[0]
    lo, hi = metrics.bootstrap_ci(samples, statistic, num_resamples, confidence, seed)
    return Estimate(value, lo, hi)
