"""minGRU: a recurrent cell that is linear in its state, run over time with a parallel scan.

The cell of Feng et al. (2024), "Were RNNs All We Needed?" (arXiv 2410.01201), section 3.1
(minGRU). The gates read the input only, never the previous state::

    z_t  = sigmoid(W_z x_t + b_z)                  update gate
    h~_t = g(W_h x_t + b_h)                        candidate state
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t        new state and output

with ``g(v) = v + 0.5`` for ``v >= 0`` and ``sigmoid(v)`` otherwise, so that ``h~_t > 0``.

Why it is parallel: with ``a_t = 1 - z_t`` and ``b_t = z_t * h~_t`` the update is
``h_t = a_t * h_{t-1} + b_t``, linear in the state, and neither ``a_t`` nor ``b_t`` depends
on an earlier state. Unrolled, ``h_t = A_t * h_0 + sum_{s <= t} (A_t / A_s) * b_s`` with
``A_t = a_1 * ... * a_t``, i.e. cumulative products and sums over all ``T`` steps at once:
no Python loop over time and no recurrent weight (so no ``weight_hh``).

Three ways over time compute the same ``h`` (``MinGRUCell(..., scan=...)``); both scans are
tested against the Python loop :meth:`MinGRUCell.run_sequential` for outputs and gradients.

``scan="linear"`` (default): a two-level prefix scan over the affine maps ``h -> a_t * h + b_t``
(Blelloch 1990, "Prefix sums and their applications", the scan with fewer processors than
elements; used for linear RNNs by Martin & Cundy 2018, arXiv 1709.04057): see
:func:`linear_scan_values`. It is the default, not the paper's log-space scan, because it is
more accurate and faster here. With ``a_t`` in ``[0, 1]`` nothing is divided or
exponentiated and a reset is an exact ``a_t = 0``. Against a float64 loop its float32 error
is the float32 loop's: 1.04e-7 against 1.11e-7 of the largest entry at T = 200, 1.07e-7
against 1.64e-7 at T = 1000 (outputs and gradients, a reset every 97 steps, ``a, b`` uniform
in [0, 1]). The log scan's was up to 4.3e-5 (1.3e-3 with saturated gates, logits of +-60).

Fwd+bwd of one cell over ``[B, T, 48]`` (256 units, one CPU thread, idle 2-core machine,
median of 20; ``scripts/bench_trunks.py`` times the same call): B=4, T=200: linear 6.24 ms,
log 33.52, loop 11.02; B=10, T=200 (the SAC update's five cells of two windows): linear
15.32, log 80.18, loop 20.63; B=128, T=32: linear 34.62, log 147.88, loop 28.05. The
Hillis-Steele form it replaced took 8.69, 22.71 and 50.03 ms, timed right after (several full
passes with padded copies per round). ``torch.logcumsumexp`` and its backward are serial
loops on CPU; at large batches the loop wins (``scan="loop"``). On a GPU the scans are the
point.

``scan="log"``: the paper's log-space scan (its appendix; after Heinsen 2023, "Efficient
parallelization of a ubiquitous sequential computation", arXiv 2311.06281):

- ``log a_t = log(1 - z_t) = -softplus(k_t)`` and ``log z_t = -softplus(-k_t)`` from the
  gate logit ``k_t``, and ``log g(v) = log(v + 0.5)`` or ``-softplus(-v)``: no ``log`` of a
  rounded-to-zero gate.
- ``L_t = cumsum(log a)_t`` and ``log h_t = L_t + logcumsumexp(log b - L)_t``: no division by
  a vanishing ``A_s``.
- Deliberate difference, chunking: in float32 the rounding of ``h_t`` grows with ``|L_t|``
  (about ``6e-8 * |L_t|`` relative; ``|L_t|`` is about ``0.7 t`` at init), which put the
  paper's one-pass form 7e-3 (2e-2 with resets) off the loop's bias gradient at T = 1000.
  So the scan runs within chunks of ``SCAN_CHUNK`` (32) steps, and the state entering each
  chunk comes from the same scan over the chunk ends, in float64 (T / 32 values per row;
  float32 on MPS, which has no float64).
- Resets at ``t > 0`` should make ``log a_t = -inf``, but ``-inf`` in ``L`` gives
  ``inf - inf`` = NaN; ``log a_t`` is set to ``-RESET_LOG_DECAY`` (-60) instead, so the state
  before a reset still enters, scaled by ``exp(-60)`` (9e-27), below float32 resolution
  unless that state is 1e18 times the new input. Values and gradients stay finite; each
  reset adds about ``60 * 6e-8`` relative rounding within its chunk.

Both scans, deliberate difference: the initial state enters *outside* any logarithm (as
``A_t * h_0``). The paper's code takes ``log g(h_0)`` (it treats ``h_0`` as a
pre-activation); here the state is the cell's own output ``h`` (the convention of
:class:`agents.nets.networks.RecurrentCell`), so ``run`` continues exactly where a previous call
stopped, and a zero or negative state needs no ``log`` (``log 0`` would give ``-inf`` and NaN
gradients). A reset at ``t = 0`` zeroes ``h_0`` exactly.

Init: Glorot-uniform input weights per block (``z`` and ``h~``) and zero biases, as the other
trunks here (Keras' defaults, which Continual World used). The paper's method section gives
no init (its listings only call ``linear_z`` / ``linear_h``). With zero bias every gate starts
at ``z = 0.5``.

:meth:`MinGRUCell.run_sequential` is the same cell stepped in a Python loop; the tests use
it as the reference for outputs and gradients.

Example:
    >>> _ = torch.manual_seed(0)
    >>> cell = MinGRUCell(input_dim=3, size=5)
    >>> p = dict(cell.named_parameters())
    >>> x = torch.randn(2, 7, 3)
    >>> out, last = cell.run(p, "", x, None, None)
    >>> out.shape, last.shape
    (torch.Size([2, 7, 5]), torch.Size([2, 5]))
    >>> ref, _ = cell.run_sequential(p, "", x, None, None)
    >>> torch.allclose(out, ref, atol=1e-5)
    True
    >>> bool((out > 0).all())  # from a zero state h stays positive
    True
    >>> first, mid = cell.run(p, "", x[:, :4], None, None)  # continuing from a returned state is exact
    >>> torch.allclose(cell.run(p, "", x[:, 4:], mid, None)[0], out[:, 4:], atol=1e-5)
    True
    >>> log_cell = MinGRUCell(input_dim=3, size=5, scan="log")
    >>> torch.allclose(log_cell.run(p, "", x, None, None)[0], out, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.nets.stacked import dense, members

Params = Mapping[str, Tensor]

RESET_LOG_DECAY = 60.0
"""``-log a_t`` used at a reset step ``t > 0`` in place of ``inf`` (see the module docstring)."""
SCAN_CHUNK = 32
"""Steps per chunk of the log-space scan; bounds ``|L|`` and so the float32 rounding (module docstring)."""


def g(v: Tensor) -> Tensor:
    """The paper's candidate activation: ``v + 0.5`` for ``v >= 0``, else ``sigmoid(v)`` (> 0)."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """``log g(v)`` without forming ``g``: ``log(v + 0.5)`` or ``-softplus(-v)``.

    ``relu`` keeps the unused branch finite for ``v < -0.5`` (``torch.where`` differentiates
    both branches, and a NaN there would poison the gradient).
    """
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), -F.softplus(-v))


def log_space_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, chunk: int = SCAN_CHUNK) -> Tensor:
    """All ``h_t = a_t * h_{t-1} + b_t`` for ``a, b > 0`` given in logs ``[B, T, H]``; ``h0 [B, H]`` any sign.

    Chunked (see the module docstring): the log-space scan within chunks of ``chunk`` steps
    from a zero state, then the same scan over the chunks' end states in float64 (the
    state entering every chunk), then ``h = inner + exp(L within chunk) * entering state``.
    """
    batch, steps, width = log_a.shape
    size = min(steps, chunk)
    count = -(-steps // size)
    pad = count * size - steps
    if pad:  # the scan is causal: finite padding at the end changes no real step
        log_a, log_b = F.pad(log_a, (0, 0, 0, pad)), F.pad(log_b, (0, 0, 0, pad))
    log_a = log_a.reshape(batch, count, size, width)
    cum = torch.cumsum(log_a, dim=2)  # L within each chunk
    log_inner = cum + torch.logcumsumexp(log_b.reshape(batch, count, size, width) - cum, dim=2)
    if count == 1:
        entering = h0.unsqueeze(1)
    else:
        wide = log_a.dtype if log_a.device.type == "mps" else torch.float64  # MPS has no float64
        decay = torch.cumsum(cum[:, :, -1].to(wide), dim=1)  # log of the decay from step 0 to each chunk's end
        ends = torch.exp(decay + torch.logcumsumexp(log_inner[:, :, -1].to(wide) - decay, dim=1))
        ends = ends + torch.exp(decay) * h0.to(wide).unsqueeze(1)  # the state at each chunk's end
        entering = torch.cat([h0.unsqueeze(1), ends[:, :-1].to(h0.dtype)], dim=1)
    h = torch.exp(log_inner) + torch.exp(cum) * entering.unsqueeze(2)
    return h.reshape(batch, count * size, width)[:, :steps]


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, chunk: int | None = None) -> Tensor:
    """All ``h_t = a_t * h_{t-1} + b_t`` (``[B, T, H]``, ``h0 [B, H]``), with a scan backward too.

    The values come from :func:`linear_scan_values`. The gradient is itself a linear
    recurrence run backwards in time, ``g_t = dL/dh_t + a_{t+1} * g_{t+1}``, so the backward
    pass is one more scan (on the reversed sequence) plus ``dL/db = g``,
    ``dL/da_t = g_t * h_{t-1}``, ``dL/dh0 = a_1 * g_1``. It keeps only ``a``, ``h0`` and ``h``
    for the backward (autograd through the scan would keep every round) and was 1.3-2x
    faster fwd+bwd on CPU. Built from torch ops, so it works under ``vmap``, ``jacrev`` and
    double backward.
    """
    return _LinearScan.apply(a, b, h0, chunk)


class _LinearScan(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor, b: Tensor, h0: Tensor, chunk: int) -> Tensor:
        return linear_scan_values(a, b, h0, chunk)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        a, _, h0, chunk = inputs
        ctx.save_for_backward(a, h0, output)
        ctx.chunk = chunk

    @staticmethod
    def backward(ctx, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        a, h0, h = ctx.saved_tensors
        a_next = F.pad(a[:, 1:], (0, 0, 0, 1))  # a_{t+1}, 0 after the last step
        grad_b = linear_scan(a_next.flip(1), grad_h.flip(1), torch.zeros_like(h0), ctx.chunk).flip(1)
        h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
        return grad_b * h_prev, grad_b, a[:, 0] * grad_b[:, 0], None


def linear_scan_values(a: Tensor, b: Tensor, h0: Tensor, chunk: int | None = None) -> Tensor:
    """All ``h_t = a_t * h_{t-1} + b_t`` (``[B, T, H]``, ``h0 [B, H]``) by a two-level scan.

    The time axis is cut into blocks of ``chunk`` steps (default ``ceil(sqrt(T))``, which
    makes the two loops below equally long). First every block composes its maps from a zero
    state, one step at a time but all blocks at once (``b_t += a_t * b_{t-1}``,
    ``a_t *= a_{t-1}`` within the block); then the state entering each block runs over the
    blocks' end maps; then ``h = b_inner + a_inner * entering``. This is Blelloch's scan for
    fewer processors than elements (Blelloch 1990, "Prefix sums and their applications"):
    about ``2 sqrt(T)`` small steps instead of ``T``, each step's work done once (a
    Hillis-Steele scan repeats it ``log2`` times), and only products and sums of the gates,
    so ``a_t = 0`` (a reset) is exact.
    """
    batch, steps, width = a.shape
    size = max(1, min(steps, chunk if chunk is not None else math.ceil(math.sqrt(steps))))
    count = -(-steps // size)
    if count * size != steps:  # the scan is causal: padding at the end changes no real step
        pad = (0, 0, 0, count * size - steps)
        a, b = F.pad(a, pad), F.pad(b, pad)
    else:
        a, b = a.clone(), b.clone()  # updated in place below; the caller's tensors stay as they were
    a, b = a.view(batch, count, size, width), b.view(batch, count, size, width)
    for t in range(1, size):  # within every block at once
        b[:, :, t] += a[:, :, t] * b[:, :, t - 1]  # not addcmul_: vmap has no batching rule for it
        a[:, :, t].mul_(a[:, :, t - 1])
    entering, state = [], h0
    for block in range(count):  # across blocks
        entering.append(state)
        if block + 1 < count:
            state = torch.addcmul(b[:, block, -1], a[:, block, -1], state)
    h = torch.addcmul(b, a, torch.stack(entering, dim=1).unsqueeze(2))
    return h.view(batch, count * size, width)[:, :steps]


SCANS = ("linear", "log", "loop")


def layer_param_names(layer: int) -> tuple[str, str]:
    """The names of layer ``layer``'s weight and bias (PyTorch's ``_l1`` suffix style; layer 0
    keeps the single-layer names, so one-layer files read as before)."""
    return ("weight_ih", "bias_ih") if layer == 0 else (f"weight_ih_l{layer}", f"bias_ih_l{layer}")


class MinGRUCell(nn.Module):
    """minGRU cell (Feng et al. 2024) with explicit weights; see the module docstring.

    Same interface as :class:`agents.nets.networks.RecurrentCell`: parameters ``weight_ih``
    ``[2 * size, input_dim]`` (rows ``[z | h~]``) and ``bias_ih`` ``[2 * size]``, the state
    ``[B, layers * size]`` holds every layer's ``h``, and :meth:`run` reads the weights from a
    dict and returns the last layer's outputs.

    Stacked layers (``layers > 1``): layer ``l`` reads ``[h^(l-1)_t, x_t]`` (weights
    ``weight_ih_l{l}`` ``[2 * size, size + input_dim]``, ``bias_ih_l{l}``). Feng et al. stack
    minGRU layers too; the skip connection of ``x`` into every layer is our choice (their
    blocks add residuals and MLPs instead). Why stack at all: a single minGRU's gates see only
    the current input, so it must learn input-selective writes (open for the cue, shut for
    every distractor) before its readout can see the cue at all; with a batch of 4 sequences it
    never did on ``repeat-first(d=100)``, where two layers learned it (README, "Defaults").

    Args:
        input_dim: width of each step's input.
        size: width of each layer's state and of the output.
        layers: stacked layers, >= 1.
        scan: how :meth:`run` goes over time: ``"linear"`` (default) or ``"log"`` (the paper's
            log-space scan), see the module docstring, or ``"loop"`` (:meth:`run_sequential`,
            faster on CPU at large batches).
    """

    def __init__(self, input_dim: int, size: int, scan: str = "linear", layers: int = 1) -> None:
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"MinGRUCell: scan must be one of {SCANS}, got {scan!r}")
        self.scan = scan
        for name, value in (("input_dim", input_dim), ("size", size), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MinGRUCell: {name} must be a positive int, got {value!r}")
        self.input_dim, self.size, self.layers = input_dim, size, layers
        for layer in range(layers):
            weight_name, bias_name = layer_param_names(layer)
            width = input_dim if layer == 0 else size + input_dim
            weight = nn.Parameter(torch.empty(2 * size, width))
            for block in range(2):  # Glorot per block, like RecurrentCell's per-gate init
                nn.init.xavier_uniform_(weight.data[block * size : (block + 1) * size])
            self.register_parameter(weight_name, weight)
            self.register_parameter(bias_name, nn.Parameter(torch.zeros(2 * size)))

    @property
    def state_size(self) -> int:
        return self.layers * self.size

    def run(self, p: Params, prefix: str, x: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x [B, T, in]`` -> the last layer's outputs ``[B, T, size]`` and the last state
        ``[B, layers * size]``, by ``self.scan``.

        Args:
            p: weights; reads ``p[prefix + "weight_ih"]`` and ``p[prefix + "bias_ih"]`` (and
                ``weight_ih_l{l}``, ``bias_ih_l{l}`` of the layers above).
            prefix: name prefix of this cell's weights in ``p`` (e.g. ``"cell."``).
            x: inputs ``[B, T, input_dim]``, ``T >= 1``.
            state: the state before the first step ``[B, layers * size]``, or None for zeros.
            reset: ``[B, T]`` bool or None; where true, the row's state is zeroed *before* that step.
        """
        outputs, last = self.run_layers(p, prefix, x, state, reset)
        return outputs[-1], last

    def run_layers(
        self, p: Params, prefix: str, x: Tensor, state: Tensor | None, reset: Tensor | None, sequential: bool = False
    ) -> tuple[list[Tensor], Tensor]:
        """Every layer's outputs ``[B, T, size]`` (bottom first) and the last state; as :meth:`run`."""
        states = self._layer_states(x, state)
        outputs, lasts, inputs = [], [], x
        for layer, h0 in enumerate(states):
            if layer > 0:
                inputs = torch.cat([outputs[-1], x], dim=-1)
            run = self._layer_sequential if sequential or self.scan == "loop" else self._layer_scan
            out, last = run(p, prefix, layer, inputs, h0, reset)
            outputs.append(out)
            lasts.append(last)
        return outputs, torch.cat(lasts, dim=-1) if len(lasts) > 1 else lasts[0]

    def run_sequential(
        self, p: Params, prefix: str, x: Tensor, state: Tensor | None, reset: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The same cell stepped in a Python loop (the reference for :meth:`run`); same arguments.

        A reset here is exact (the state is multiplied by 0).
        """
        outputs, last = self.run_layers(p, prefix, x, state, reset, sequential=True)
        return outputs[-1], last

    run_loop = run_sequential  # the name every cell's step-by-step reference has (agents.nets.networks)

    def run_members(self, params: list[Params], prefix: str, x: Tensor, states: list[Tensor | None]) -> Tensor:
        """``M`` cells of this shape over the same input ``x [B, T, in]`` (no resets), one scan per
        layer for all of them: the top layer's outputs ``[M, B, T, size]``.

        The SAC update runs five cells (actor, critics, target critics) over one batch; the
        scan is elementwise, so their rows go through it together, which saves four fifths of
        the small-op overhead that dominates on a CPU. Equal to ``M`` calls of :meth:`run`
        (tested).
        """
        if self.scan == "loop":
            return torch.stack([self.run(p, prefix, x, s, None)[0] for p, s in zip(params, states)])
        # A population's weights are [P, 2H, in] (rows of x member-major): its P members of each
        # cell join the call's members, P * M in all, each with x.shape[0] / P rows.
        population = members(params[0][prefix + layer_param_names(0)[0]])
        cells, batch, steps = len(params) * population, x.shape[0] // population, x.shape[1]
        layer_states = [self._layer_states(x, s) for s in states]
        own_x = x.view(population, batch, steps, -1)
        inputs = own_x.expand(len(params), *own_x.shape).flatten(0, 1)
        for layer in range(self.layers):
            weight_name, bias_name = layer_param_names(layer)
            weight = torch.stack([p[prefix + weight_name] for p in params])  # [M, (P,) 2H, in]
            bias = torch.stack([p[prefix + bias_name] for p in params])
            weight, bias = weight.view(cells, *weight.shape[-2:]), bias.view(cells, -1)
            if layer > 0:
                inputs = torch.cat([inputs, own_x.expand(len(params), *own_x.shape).flatten(0, 1)], dim=-1)
            k = torch.baddbmm(bias.unsqueeze(1), inputs.flatten(1, 2), weight.transpose(1, 2))
            k, pre = k.view(cells * batch, steps, -1).chunk(2, dim=-1)
            h0 = torch.cat([x.new_zeros(x.shape[0], self.size) if s[layer] is None else s[layer] for s in layer_states])
            if self.scan == "linear":
                h = linear_scan(torch.sigmoid(-k), torch.sigmoid(k) * g(pre), h0)
            else:
                h = log_space_scan(-F.softplus(k), -F.softplus(-k) + log_g(pre), h0)
            inputs = h.view(cells, batch, steps, self.size)
        return inputs.view(len(params), x.shape[0], steps, self.size)

    def _layer_states(self, x: Tensor, state: Tensor | None) -> list[Tensor | None]:
        if state is None:
            return [None] * self.layers
        if state.dim() != 2 or state.shape[0] != x.shape[0] or state.shape[1] != self.state_size:
            raise ValueError(f"MinGRUCell: state must be [B, layers * size] = {(x.shape[0], self.state_size)} "
                             f"or None, got {tuple(state.shape)}")
        return list(state.split(self.size, dim=-1))

    def _layer_scan(self, p: Params, prefix: str, layer: int, x: Tensor, state: Tensor | None,
                    reset: Tensor | None) -> tuple[Tensor, Tensor]:
        k, h0, keep_first, reset = self._prepare(p, prefix, layer, x, state, reset)
        k, pre = k.chunk(2, dim=-1)
        if self.scan == "linear":
            a = torch.sigmoid(-k)  # 1 - z
            if reset is not None:
                a = a.masked_fill(reset.unsqueeze(-1), 0.0)  # also zeroes h_0 where reset[:, 0]
            h = linear_scan(a, torch.sigmoid(k) * g(pre), h0)
            return h, h[:, -1]
        log_a = -F.softplus(k)  # log(1 - z)
        log_b = -F.softplus(-k) + log_g(pre)  # log(z * h~)
        if reset is not None:
            # t = 0 is exact through h_0; a -60 there would only add rounding to the chunk
            later = torch.cat([torch.zeros_like(reset[:, :1]), reset[:, 1:]], dim=1)
            log_a = log_a.masked_fill(later.unsqueeze(-1), -RESET_LOG_DECAY)
            h0 = h0 * keep_first
        h = log_space_scan(log_a, log_b, h0)
        return h, h[:, -1]

    def _layer_sequential(self, p: Params, prefix: str, layer: int, x: Tensor, state: Tensor | None,
                          reset: Tensor | None) -> tuple[Tensor, Tensor]:
        k, h, _, reset = self._prepare(p, prefix, layer, x, state, reset)
        k, pre = k.chunk(2, dim=-1)
        z, cand = torch.sigmoid(k).unbind(1), g(pre).unbind(1)
        keep = None if reset is None else (~reset).to(x.dtype).unsqueeze(-1).unbind(1)
        outputs = []
        for t in range(x.shape[1]):
            if keep is not None:
                h = h * keep[t]
            h = (1 - z[t]) * h + z[t] * cand[t]
            outputs.append(h)
        return torch.stack(outputs, dim=1), h

    def _prepare(
        self, p: Params, prefix: str, layer: int, x: Tensor, state: Tensor | None, reset: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Check one layer's shapes; return its gate logits ``[B, T, 2 * size]``, ``h_0``,
        ``keep`` at t=0, bool reset."""
        weight_name, bias_name = layer_param_names(layer)
        weight, bias = p[prefix + weight_name], p[prefix + bias_name]
        if weight.dim() not in (2, 3) or weight.shape[-2] % 2 or bias.shape != weight.shape[:-1]:
            raise ValueError(
                f"MinGRUCell: {prefix}{weight_name} must be [2 * size, input width] and {prefix}{bias_name} "
                f"[2 * size] (with a leading member axis in a population), got {tuple(weight.shape)} and "
                f"{tuple(bias.shape)}"
            )
        size, input_dim = weight.shape[-2] // 2, weight.shape[-1]
        if x.dim() != 3 or x.shape[1] < 1 or x.shape[2] != input_dim:
            raise ValueError(f"MinGRUCell: x must be [B, T >= 1, {input_dim}], got {tuple(x.shape)}")
        batch = x.shape[0]
        if state is None:
            state = x.new_zeros(batch, size)
        elif tuple(state.shape) != (batch, size):
            raise ValueError(f"MinGRUCell: state must be [B, size] = {(batch, size)} or None, got {tuple(state.shape)}")
        keep_first = None
        if reset is not None:
            if tuple(reset.shape) != tuple(x.shape[:2]):
                raise ValueError(f"MinGRUCell: reset must be [B, T] = {tuple(x.shape[:2])} or None, got {tuple(reset.shape)}")
            reset = reset.bool()  # like RecurrentCell: any nonzero value resets
            keep_first = (~reset[:, :1]).to(x.dtype)
        return dense(x, weight, bias), state, keep_first, reset
