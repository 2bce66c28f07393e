"""Sequence kernels for the recurrent cells: one call runs all ``T`` steps.

A Python loop that builds the autograd graph step by step costs ~20 op dispatches per
step forward and as many again backward; at the batch sizes recurrent SAC uses (a few
whole episodes per update) that overhead, not arithmetic, is the cost. Three kernels
replace the loop where they apply (:func:`sequence_kernel` picks one):

- **CUDA, GRU and LSTM**: ``torch._VF.gru`` / ``torch._VF.lstm`` with the weights passed
  in, which dispatch to cuDNN's fused RNN.
- **CPU, LSTM**: ``torch._VF.lstm``, whose CPU path is a fused (oneDNN) kernel.
- **CPU, GRU**: :class:`GRUSequence`, an autograd function with a hand-written
  backward through time, its two loops compiled with TorchScript. The forward builds no
  graph and keeps the gates; the backward's loop carries only the state gradient (five
  tensor ops a step), everything else is computed for all steps at once, and the weight
  gradients are one matrix product. Several GRUs
  that read the same inputs (the actor's and the critics' cells) run as one call. PyTorch's own ``_VF.gru`` on CPU is no
  faster than the Python loop (measured: 53 vs 61 ms fwd+bwd at batch 2, 200 steps,
  256 units), because it records every step for autograd just the same.

Every kernel computes exactly PyTorch's equations (``r, z, n`` for the GRU, ``i, f, g, o``
for the LSTM), and the tests check outputs and gradients against the step-by-step
reference (:meth:`agents.nets.networks.RecurrentCell.run_loop`). The loop stays in use where
a kernel cannot be: under ``torch.func`` transforms (``vmap`` over seeds, per-row
Jacobians in EWC/MAS), and for LSTM/CUDA rows whose state is reset in the middle of a
sequence (the GRU function handles resets itself).

Example:
    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> B, T, H = 2, 5, 3
    >>> gx, h0 = torch.randn(B, T, 3 * H), torch.randn(B, H)
    >>> w, b = torch.randn(3 * H, H), torch.randn(3 * H)
    >>> out, last = gru_sequence(gx, h0, w, b, None)
    >>> out.shape, bool(torch.equal(out[:, -1], last))
    (torch.Size([2, 5, 3]), True)
"""

from __future__ import annotations

import warnings
from typing import List, Optional

import torch
from torch import Tensor


def functorch_active(*tensors: Tensor) -> bool:
    """True when any tensor is wrapped by a ``torch.func`` transform (vmap, grad, jacrev)."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(t is not None and wrapped(t) for t in tensors)


def _script(fn):
    """TorchScript a loop. ``torch.jit.script`` is deprecated in favour of ``torch.compile``,
    which would recompile for every new sequence length and takes far longer to build;
    the interpreter is what is needed here: the loop without Python between its ops."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(fn)


@_script
def _gru_forward(gates_x: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor, keep: Optional[Tensor]):
    """The forward loop (TorchScript: no Python between ops). Shapes as in :class:`GRUSequence`."""
    size = h0.shape[-1]
    w_t = weight_hh.transpose(1, 2)
    b = bias_hh.unsqueeze(1)
    h = h0
    h_prev: List[Tensor] = []
    rzs: List[Tensor] = []
    ns: List[Tensor] = []
    gh_ns: List[Tensor] = []
    outs: List[Tensor] = []
    for t in range(gates_x.shape[2]):
        if keep is not None:
            h = h * keep[..., t].unsqueeze(-1)
        gx = gates_x[:, :, t]
        gh = torch.baddbmm(b, h, w_t)
        rz = torch.sigmoid(gx[..., : 2 * size] + gh[..., : 2 * size])
        gh_n = gh[..., 2 * size :]
        n = torch.tanh(torch.addcmul(gx[..., 2 * size :], rz[..., :size], gh_n))
        h_prev.append(h)
        h = torch.lerp(n, h, rz[..., size:])
        rzs.append(rz)
        ns.append(n)
        gh_ns.append(gh_n)
        outs.append(h)
    return (torch.stack(outs, 2), h, torch.stack(h_prev, 2), torch.stack(rzs, 2), torch.stack(ns, 2),
            torch.stack(gh_ns, 2))


@_script
def _gru_backward(grad_out: Tensor, dh: Tensor, d_pre: Tensor, z: Tensor, weight_hh: Tensor, keep: Optional[Tensor]):
    """The reverse loop, carrying only the state gradient: 5 ops a step.

    ``d_pre [M, B, T, 3, H]`` maps the gradient reaching ``h_t`` to the gradient of the
    recurrent pre-activations ``W_hh h_{t-1} + b_hh`` (r, z, n parts); returns the
    gradient reaching each ``h_t`` (stacked) and the initial state's.
    """
    steps = grad_out.shape[2]
    carried: List[Tensor] = []
    for i in range(steps):
        t = steps - 1 - i
        dh = dh + grad_out[:, :, t]
        carried.append(dh)
        # [M, B, 3, H] * [M, B, 1, H]: the r, z, n parts share dh (a broadcast, not a copy)
        d_gh = (d_pre[:, :, t] * dh.unsqueeze(-2)).flatten(-2)
        dh = torch.baddbmm(dh * z[:, :, t], d_gh, weight_hh)
        if keep is not None:
            dh = dh * keep[..., t].unsqueeze(-1)
    carried.reverse()
    return torch.stack(carried, 2), dh


class GRUSequence(torch.autograd.Function):
    """``M`` GRUs of one shape over the same ``T`` steps, with backpropagation through
    time written out. ``M`` is a leading "member" axis: the agent runs its actor's and
    critics' cells (which read the same inputs) as one call, one batched matrix product
    per step for all of them.

    ``apply(gates_x, h0, weight_hh, bias_hh, keep)``:

    - ``gates_x [M, B, T, 3H]``: the input projections ``W_ih x_t + b_ih`` (computed
      outside, so autograd handles ``W_ih`` and the inputs as one matrix product);
    - ``h0 [M, B, H]``: the initial states;
    - ``weight_hh [M, 3H, H]``, ``bias_hh [M, 3H]``: the recurrent weights;
    - ``keep [B, T]`` (shared by all members) or ``[M, B, T]`` (each member's own), or None:
      a member's state is multiplied by ``keep[..., t]`` before step ``t`` (0 resets a row,
      as ``RecurrentCell.run``'s ``reset``);
    - ``trained`` (int or None): only the first ``trained`` members are differentiated;
      the others (the target critics, whose weights take no gradient) get zero gradients
      without their backward being computed. None: every member.

    Returns ``(outputs [M, B, T, H], last states [M, B, H])``.
    """

    @staticmethod
    def forward(ctx, gates_x: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor, keep: Tensor | None,
                trained: int | None = None):
        out, last, h_prev, rz, n, gh_n = _gru_forward(gates_x, h0, weight_hh, bias_hh, keep)
        members = gates_x.shape[0]
        k = members if trained is None else max(0, min(int(trained), members))
        ctx.members = members
        ctx.save_for_backward(h_prev[:k], rz[:k], n[:k], gh_n[:k], weight_hh[:k], keep)
        return out, last

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_last: Tensor | None):
        h_prev, rz, n, gh_n, weight_hh, keep = ctx.saved_tensors
        k, members = h_prev.shape[0], ctx.members
        if grad_out is not None:
            grad_out = grad_out[:k]
        if grad_last is not None:
            grad_last = grad_last[:k]
        grads = GRUSequence._differentiate(grad_out, grad_last, h_prev, rz, n, gh_n, weight_hh, keep)
        if k < members:  # the untrained members' gradients are zero
            grads = [torch.cat([g, g.new_zeros(members - k, *g.shape[1:])]) for g in grads]
        return (*grads, None, None)

    @staticmethod
    def _differentiate(grad_out, grad_last, h_prev, rz, n, gh_n, weight_hh, keep) -> list[Tensor]:
        """Gradients of ``gates_x, h0, weight_hh, bias_hh`` (the members saved)."""
        size = h_prev.shape[-1]
        # Local derivatives of h_t = (1 - z) n + z h_{t-1}, n = tanh(x_n + r * gh_n), for all steps at once.
        r, z = rz[..., :size], rz[..., size:]
        d_an = (1.0 - z) * (1.0 - n * n)  # d h_t / d (n's pre-activation)
        d_az = (h_prev - n) * z * (1.0 - z)
        d_ar = d_an * gh_n * r * (1.0 - r)
        grad_out = torch.zeros_like(h_prev) if grad_out is None else grad_out.contiguous()
        dh = torch.zeros_like(h_prev[:, :, 0]) if grad_last is None else grad_last
        d_pre = torch.stack([d_ar, d_az, d_an * r], dim=-2)  # [M, B, T, 3, H]
        carried, dh = _gru_backward(grad_out, dh, d_pre, z, weight_hh, keep)
        d_gh = (d_pre * carried.unsqueeze(-2)).flatten(-2)
        d_gx = torch.cat([d_gh[..., : 2 * size], carried * d_an], dim=-1)
        d_weight = d_gh.flatten(1, 2).transpose(1, 2) @ h_prev.flatten(1, 2)
        return [d_gx, dh, d_weight, d_gh.sum((1, 2))]


def gru_sequence(gates_x: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor,
                 keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """One GRU (no member axis) through :class:`GRUSequence`: ``[B, T, H]``, ``[B, H]``."""
    out, last = GRUSequence.apply(gates_x.unsqueeze(0), h0.unsqueeze(0), weight_hh.unsqueeze(0),
                                  bias_hh.unsqueeze(0), keep)
    return out.squeeze(0), last.squeeze(0)


def fused_rnn(kind: str, x: Tensor, state: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
              size: int) -> tuple[Tensor, Tensor]:
    """PyTorch's fused GRU/LSTM (cuDNN on CUDA, oneDNN LSTM on CPU) over ``x [B, T, in]``.

    ``state`` is ``[B, H]`` (GRU) or ``[B, 2H]`` (LSTM, ``[h, c]``); returns outputs
    ``[B, T, H]`` and the last state in the same layout.
    """
    weights = [w_ih, w_hh, b_ih, b_hh]
    if kind == "gru":
        out, h = torch._VF.gru(x, state.unsqueeze(0).contiguous(), weights, True, 1, 0.0, True, False, True)
        return out, h.squeeze(0)
    hx = (state[:, :size].unsqueeze(0).contiguous(), state[:, size:].unsqueeze(0).contiguous())
    out, h, c = torch._VF.lstm(x, hx, weights, True, 1, 0.0, True, False, True)
    return out, torch.cat([h.squeeze(0), c.squeeze(0)], dim=-1)


def sequence_kernel(kind: str, device: torch.device, mid_reset: bool, *tensors: Tensor) -> str:
    """Which implementation runs a cell: ``"fused"``, ``"gru_function"`` or ``"loop"``."""
    if functorch_active(*tensors):
        return "loop"
    if device.type == "cuda":
        return "loop" if mid_reset else "fused"
    if kind == "gru":
        return "gru_function"
    if kind == "lstm" and not mid_reset:
        return "fused"
    return "loop"
