"""Kernels for weights with a leading member axis: one call serves every member of a population.

A population (:mod:`agents.population`) keeps the weights of its ``K`` members stacked:
a layer's weight is ``[K, out, in]`` instead of ``[out, in]``, its bias ``[K, out]``. The
networks (:mod:`agents.nets.networks`) stay written once: their inputs fold the members into the
batch axis, member-major (rows ``k * B .. (k + 1) * B - 1`` belong to member ``k``), and every
operation that touches a weight goes through the functions here, which look at the
weight's rank: a plain weight runs the usual kernel (so a single run computes exactly what it
always did), a stacked one runs one batched kernel over all members (``baddbmm``), not a loop.

Why fold the members into the batch axis rather than add an axis: every other operation of
the SAC update (slicing time, gathering heads, squashing, masking) is then member-agnostic,
and the single run and the population share one loss function (:meth:`agents.sac.SAC.compute_loss`).

Example:
    >>> import torch
    >>> w, b = torch.randn(3, 5, 4), torch.randn(3, 5)        # 3 members, 4 -> 5
    >>> x = torch.randn(3 * 2, 7, 4)                          # 2 rows per member, 7 steps
    >>> y = dense(x, w, b)
    >>> y.shape
    torch.Size([6, 7, 5])
    >>> own = torch.nn.functional.linear(x[2:4], w[1], b[1])  # member 1 on its own
    >>> bool(torch.allclose(y[2:4], own, atol=1e-6))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def is_stacked(weight: Tensor) -> bool:
    """A matrix with a leading member axis (``[K, out, in]``)."""
    return weight.dim() == 3


def members(weight: Tensor) -> int:
    """How many members a weight holds (1 for a plain one)."""
    return weight.shape[0] if is_stacked(weight) else 1


def dense(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x W^T + b`` for a plain weight ``[out, in]`` or a stacked one ``[K, out, in]``.

    Stacked: ``x [K * B, ..., in]`` (member-major rows), one ``baddbmm`` for all members.
    """
    if not is_stacked(weight):
        return F.linear(x, weight, bias)
    if weight.shape[0] == 1:  # one member: the single run's kernel (fewer ops, the same numbers)
        return F.linear(x, weight[0], None if bias is None else bias[0])
    k, out_features = weight.shape[0], weight.shape[1]
    flat = x.reshape(k, -1, x.shape[-1])
    if bias is None:
        y = torch.bmm(flat, weight.transpose(1, 2))
    else:
        y = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return y.view(*x.shape[:-1], out_features)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last axis with a plain (``[H]``) or stacked (``[K, H]``) affine part."""
    if weight.dim() == 1 or weight.shape[0] == 1:
        return F.layer_norm(x, x.shape[-1:], weight.view(-1), bias.view(-1), eps)
    k, width = weight.shape
    normed = F.layer_norm(x, x.shape[-1:], None, None, eps).view(k, -1, width)
    return torch.addcmul(bias.unsqueeze(1), normed, weight.unsqueeze(1)).view(x.shape)


def member_rows(k: int, rows_per_member: int, device: torch.device | str | None = None) -> Tensor:
    """``[K * B, 1]``: the member of each row of a member-major batch (to index ``[K, ...]`` state).

    Example:
        >>> member_rows(2, 3).view(-1).tolist()
        [0, 0, 0, 1, 1, 1]
    """
    return torch.arange(k, device=device).repeat_interleave(rows_per_member).unsqueeze(1)


def per_member_mean(x: Tensor, mask: Tensor, k: int) -> Tensor:
    """``[K]``: the mean of ``x`` over each member's rows where ``mask`` is 1.

    With ``k = 1`` this is the plain masked mean of :func:`agents.sac.masked_mean`, one value.
    """
    masked = (x * mask).reshape(k, -1).sum(1)
    return masked / mask.reshape(k, -1).sum(1).clamp(min=1.0)


@torch.no_grad()
def clip_per_member(params: list[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each member's slice of stacked parameters on its own
    (torch's clip, with its 1e-6, per member: a member is clipped by its own norm only)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()  # [K]
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


__all__ = ["is_stacked", "members", "dense", "layer_norm", "member_rows", "per_member_mean", "clip_per_member"]
