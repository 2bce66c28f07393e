"""Actor and twin-critic networks for SAC: the Continual World MLP, GRU and LSTM trunks.

Every network is written *functionally*: ``forward(..., params=None)`` reads its weights
from a dict of tensors. Without ``params`` the module's own parameters are used; with
``params`` the given tensors replace them (a partial dict replaces only the names it
holds). That is what lets a hypernetwork supply an actor's weights, PackNet run the
actor on masked weights, the SAC update evaluate the critic with detached weights, and
``torch.func`` transforms run them (``functional_call`` works too, since ``params=None``
reads ``named_parameters()``).

Every weight may also carry a leading member axis (``[K, out, in]``): a population
(:mod:`agents.population`) folds its members' rows member-major into the batch axis and
the same code runs all members at once, through :mod:`agents.nets.stacked`.

Shapes: every input has a batch and a time axis, ``[B, T, ...]``; the MLP treats every
step on its own, the recurrent trunks carry a state along ``T``.

Architecture (Continual World, Wolczyk et al. 2021, ``continualworld/sac/models.py``):

- body: ``Linear -> LayerNorm -> tanh``, then ``Linear -> leaky ReLU`` for each further
  hidden layer (4 x 256 in CW); leaky ReLU slope 0.2 (TensorFlow's default, which CW used);
  Glorot-uniform weights and zero biases (Keras' defaults). ``body="relu"`` is the other
  choice: ``Linear -> ReLU`` on every layer, no normalisation, the plain network of the
  plasticity literature (Dohare et al. 2024; Sokar et al. 2023), whose units can die;
- actor: separate mean and log-std heads, log std clipped to [-20, 2], tanh squashing;
- critic: ``Q(s, a)`` from the body applied to ``[obs, action]``; two independent
  critics (clipped double Q);
- multi-head: every head has ``num_heads`` copies of its outputs and the task index of
  each step picks one (CW default); ``num_heads=1`` is the single-head variant.

Recurrent trunks (GRU, LSTM) follow the recurrent off-policy recipe of Ni et al. (ICML
2022): the cell reads ``[obs, previous action, previous reward]`` (each optional), and
the body reads ``[cell output, obs]`` (plus the action in a critic). Actor and critics
have their own cells. The recurrent state is one tensor ``[B, state_size]`` (the LSTM
stores ``[h, c]`` side by side), so it can be masked and stored like any other tensor.

Example:
    >>> config = NetworkConfig(input_dim=3, num_heads=2, trunk="gru", hidden_sizes=(8, 8), rnn_size=5)
    >>> actor = Actor(config)
    >>> obs, task = torch.zeros(4, 6, 3), torch.ones(4, 6, dtype=torch.long)
    >>> prev_action, prev_reward = torch.zeros(4, 6, 4), torch.zeros(4, 6)
    >>> mean, log_std, state = actor(obs, prev_action, prev_reward, task)
    >>> mean.shape, state.shape
    (torch.Size([4, 6, 4]), torch.Size([4, 5]))
    >>> zeros = {name: torch.zeros_like(p) for name, p in actor.named_parameters()}
    >>> actor(obs, prev_action, prev_reward, task, params=zeros)[0].abs().sum().item()
    0.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.nets.rnn_kernels import GRUSequence, functorch_active, fused_rnn, gru_sequence, sequence_kernel
from agents.nets.scan_cell import MinGRUCell, layer_param_names
from agents.nets.stacked import dense, is_stacked, layer_norm, members

TRUNKS = ("mlp", "gru", "lstm", "mingru")
BODIES = ("cw", "relu")
LEAKY_RELU_SLOPE = 0.2
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
CW_HIDDEN_SIZES = (256, 256, 256, 256)
HALF_LOG_2PI = 0.9189385332046727

Params = Mapping[str, Tensor]


@dataclass(frozen=True)
class NetworkConfig:
    """The shape of one actor or critic.

    Attributes:
        input_dim: width of the observation the network reads (CW: the task part only,
            the one-hot just selects the head).
        action_dim: action width (Meta-World: 4).
        num_heads: output heads picked by the task index (CW: one per task; 1: single head).
        trunk: ``"mlp"``, ``"gru"``, ``"lstm"`` or ``"mingru"`` (parallel scan over time).
        hidden_sizes: the body's hidden layers (CW: 4 x 256).
        rnn_size: recurrent cell width (GRU/LSTM only).
        prev_action: feed the previous action to the recurrent cell.
        prev_reward: feed the previous reward to the recurrent cell.
        chrono_horizon: chrono initialisation of the cells' keep gates for memories of up to
            this many steps (Tallec & Ollivier 2018); 0 keeps the plain initialisation.
        rnn_layers: stacked recurrent layers (``mingru`` only; GRU and LSTM have one).
        body: ``"cw"`` (LayerNorm + tanh, then leaky ReLU; CW's) or ``"relu"`` (plain ReLU
            layers, no normalisation).
    """

    input_dim: int
    action_dim: int = 4
    num_heads: int = 1
    trunk: str = "mlp"
    hidden_sizes: tuple[int, ...] = field(default=CW_HIDDEN_SIZES)
    rnn_size: int = 256
    prev_action: bool = True
    prev_reward: bool = False
    chrono_horizon: int = 0
    rnn_layers: int = 1
    body: str = "cw"

    def __post_init__(self) -> None:
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown trunk {self.trunk!r}; allowed: {', '.join(TRUNKS)}")
        check_body(self.body)
        check_rnn_layers(self.trunk, self.rnn_layers)
        if not self.hidden_sizes or min(self.hidden_sizes) <= 0:
            raise ValueError(f"hidden_sizes must be a non-empty list of positive widths, got {self.hidden_sizes!r}")
        if self.input_dim <= 0 or self.action_dim <= 0 or self.num_heads <= 0 or self.rnn_size <= 0:
            raise ValueError(f"network sizes must be positive: {self}")

    @property
    def recurrent(self) -> bool:
        return self.trunk != "mlp"

    @property
    def state_size(self) -> int:
        """Width of the recurrent state tensor (0 for the MLP)."""
        return {"mlp": 0, "gru": self.rnn_size, "lstm": 2 * self.rnn_size,
                "mingru": self.rnn_layers * self.rnn_size}[self.trunk]

    @property
    def cell_input_dim(self) -> int:
        return self.input_dim + self.action_dim * self.prev_action + int(self.prev_reward)


def check_body(body: str) -> None:
    """A clear error for an unknown body kind."""
    if body not in BODIES:
        raise ValueError(f"unknown body {body!r}; allowed: 'cw' (LayerNorm + tanh, then leaky ReLU; Continual "
                         "World's) or 'relu' (ReLU layers without normalisation)")


def check_rnn_layers(trunk: str, layers: int) -> None:
    """Stacked layers exist for the minGRU trunk only; a clear error otherwise."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"rnn_layers must be an int >= 1, got {layers!r}")
    if layers > 1 and trunk != "mingru":
        raise ValueError(f"rnn_layers={layers} is not available for the {trunk!r} trunk: stacked layers exist for "
                         "'mingru' only (gru, lstm: 1)")


def own_params(module: nn.Module, params: Params | None) -> Params:
    """The module's parameters, with the entries of ``params`` (full or partial) put over them."""
    own = dict(module.named_parameters())
    if params is None:
        return own
    unknown = set(params) - set(own)
    if unknown:
        raise KeyError(f"{type(module).__name__} has no parameters named {sorted(unknown)[:5]}")
    return {**own, **params} if len(params) < len(own) else params


def _glorot_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _linear(p: Params, name: str, x: Tensor) -> Tensor:
    return dense(x, p[name + ".weight"], p[name + ".bias"])  # plain or stacked weights (agents.nets.stacked)


def pick_head(out: Tensor, task: Tensor | None, num_heads: int) -> Tensor:
    """``out [..., num_heads * k]`` -> ``[..., k]``, the head of each step's task."""
    if num_heads == 1:
        return out
    out = out.unflatten(-1, (num_heads, -1))
    index = task.long()[..., None, None].expand(*out.shape[:-2], 1, out.shape[-1])
    return out.gather(-2, index).squeeze(-2)


class MLPBody(nn.Module):
    """The hidden layers of a head, of one of two kinds (``kind``):

    - ``"cw"``: ``Linear -> LayerNorm -> tanh``, then ``Linear -> leaky ReLU`` per layer
      (Continual World's). The LayerNorm's epsilon is 1e-3, Keras' ``LayerNormalization``
      default (CW's), not torch's 1e-5.
    - ``"relu"``: ``Linear -> ReLU`` per layer, no normalisation. Plasticity studies use
      it: a ReLU unit can go dormant, and nothing renormalises growing pre-activations,
      the two mechanisms behind loss of plasticity (Lyle et al. 2024). CW's body has
      neither and loses less (``scripts/bench_plasticity.py``: late minus early learning
      speed -0.10 with CW's body, -0.17 with this one, fine-tuning, 50 tasks).

    Example:
        >>> body = MLPBody(3, (5, 4), kind="relu")
        >>> [name for name, _ in body.named_parameters()]
        ['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']
        >>> x = torch.randn(2, 3)
        >>> bool((body.run(dict(body.named_parameters()), "", x) >= 0).all())
        True
    """

    NORM_EPS = 1e-3

    def __init__(self, input_dim: int, hidden_sizes: tuple[int, ...], kind: str = "cw") -> None:
        super().__init__()
        check_body(kind)
        self.kind = kind
        sizes = (input_dim, *hidden_sizes)
        self.layers = nn.ModuleList(_glorot_linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if kind == "cw":
            self.norm = nn.LayerNorm(hidden_sizes[0], eps=self.NORM_EPS)

    def run(self, p: Params, prefix: str, x: Tensor | None, first: Tensor | None = None) -> Tensor:
        return self.layer_outputs(p, prefix, x, first)[-1]

    def layer_outputs(self, p: Params, prefix: str, x: Tensor | None, first: Tensor | None = None) -> list[Tensor]:
        """The output of every hidden layer (the units of the plasticity methods and metrics).

        ``first``: the first layer's pre-activation, given in place of ``x`` by a caller that
        computed it in parts (:meth:`QNetwork.values`).
        """
        out = []
        for i in range(len(self.layers)):
            x = first if i == 0 and first is not None else _linear(p, f"{prefix}layers.{i}", x)
            if self.kind == "relu":
                x = F.relu(x)
            elif i == 0:
                x = torch.tanh(layer_norm(x, p[prefix + "norm.weight"], p[prefix + "norm.bias"], self.NORM_EPS))
            else:
                x = F.leaky_relu(x, LEAKY_RELU_SLOPE)
            out.append(x)
        return out


class RecurrentCell(nn.Module):
    """A GRU or LSTM cell unrolled over ``T`` in Python, with explicit weights.

    Written out (rather than ``nn.GRU``) so that its weights can come from a dict (a
    hypernetwork, PackNet masks, vmap over seeds) and rows can be reset mid-sequence.
    Gate layout and equations are PyTorch's (``r, z, n`` for the GRU; ``i, f, g, o`` for
    the LSTM); the input projection of all steps is one matrix product.
    """

    def __init__(self, kind: str, input_dim: int, size: int, chrono_horizon: int = 0) -> None:
        super().__init__()
        self.kind, self.size = kind, size
        gates = 3 if kind == "gru" else 4
        self.weight_ih = nn.Parameter(torch.empty(gates * size, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(gates * size, size))
        self.bias_ih = nn.Parameter(torch.zeros(gates * size))
        self.bias_hh = nn.Parameter(torch.zeros(gates * size))
        # Keras' recurrent defaults: Glorot input kernel, orthogonal recurrent kernel per gate.
        for g in range(gates):
            nn.init.xavier_uniform_(self.weight_ih.data[g * size : (g + 1) * size])
            nn.init.orthogonal_(self.weight_hh.data[g * size : (g + 1) * size])
        keep = self.bias_ih.data[size : 2 * size]  # the GRU's update gate z, the LSTM's forget gate f
        if chrono_horizon > 1:
            # Chrono initialisation (Tallec & Ollivier, ICLR 2018): keep-gate biases log U(1, T_max - 1),
            # so memory timescales at initialisation spread up to T_max steps instead of ~1 step
            # (a zero bias keeps half the state per step: gradients over 40 steps shrink by ~2^-40).
            keep.copy_(torch.log(torch.empty(size).uniform_(1.0, max(chrono_horizon - 1, 1.0 + 1e-3))))
            if kind == "lstm":
                self.bias_ih.data[:size] = -keep  # input gate: the mirror of the forget gate
        elif kind == "lstm":
            keep.fill_(1.0)  # forget-gate bias 1 (Jozefowicz et al. 2015)

    @property
    def state_size(self) -> int:
        return self.size if self.kind == "gru" else 2 * self.size

    def run(self, p: Params, prefix: str, x: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        """``x [B, T, in]`` -> outputs ``[B, T, size]`` and the last state ``[B, state_size]``.

        ``reset [B, T]`` (bool) zeroes a row's state *before* the step where it is true.
        A sequence kernel (:mod:`agents.nets.rnn_kernels`) runs all steps where one applies;
        :meth:`run_loop` is the step-by-step reference it is tested against.
        """
        if state is None:
            state = x.new_zeros(x.shape[0], self.state_size)
        w_ih, b_ih = p[prefix + "weight_ih"], p[prefix + "bias_ih"]
        w_hh, b_hh = p[prefix + "weight_hh"], p[prefix + "bias_hh"]
        if functorch_active(x, state, w_ih, w_hh, b_ih, b_hh):  # vmap/jacrev: no data-dependent checks
            return self.run_loop(p, prefix, x, state, reset)
        if is_stacked(w_ih):
            return self._run_stacked(p, prefix, x, state, reset)
        mid_reset = reset is not None and x.shape[1] > 1 and bool(reset[:, 1:].any())
        kernel = sequence_kernel(self.kind, x.device, mid_reset, x, state, w_ih, w_hh, b_ih, b_hh)
        if kernel == "loop":
            return self.run_loop(p, prefix, x, state, reset)
        if kernel == "gru_function":
            keep = None if reset is None else (~reset.bool()).to(x.dtype)
            return gru_sequence(F.linear(x, w_ih, b_ih), state, w_hh, b_hh, keep)
        if reset is not None:  # only at t = 0 here
            state = state * (~reset[:, 0].bool()).to(x.dtype).unsqueeze(-1)
        return fused_rnn(self.kind, x.contiguous(), state, w_ih, w_hh, b_ih, b_hh, self.size)

    def _run_stacked(self, p: Params, prefix: str, x: Tensor, state: Tensor, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        """A population's cells (weights ``[K, ...]``, rows member-major): the GRU as one
        :class:`GRUSequence` call whose members are the population's (any device: its loops
        are TorchScript); the LSTM step by step (torch's fused LSTM takes one weight set)."""
        if self.kind != "gru":
            return self.run_loop(p, prefix, x, state, reset)
        k, steps = p[prefix + "weight_ih"].shape[0], x.shape[1]
        gates_x = dense(x, p[prefix + "weight_ih"], p[prefix + "bias_ih"]).view(k, -1, steps, 3 * self.size)
        keep = None if reset is None else (~reset.bool()).to(x.dtype).view(k, -1, steps)
        out, last = GRUSequence.apply(gates_x, state.view(k, -1, self.size), p[prefix + "weight_hh"],
                                      p[prefix + "bias_hh"], keep)
        return out.reshape(-1, steps, self.size), last.reshape(-1, self.size)

    def run_loop(self, p: Params, prefix: str, x: Tensor, state: Tensor | None, reset: Tensor | None) -> tuple[Tensor, Tensor]:
        """The step-by-step unroll in Python (works under every ``torch.func`` transform)."""
        batch, steps = x.shape[0], x.shape[1]
        if state is None:
            state = x.new_zeros(batch, self.state_size)
        keep = None if reset is None else (~reset.bool()).to(x.dtype).unsqueeze(-1).unbind(1)
        # unbind, not gates_x[:, t]: indexing would backpropagate through T full-size zero tensors.
        gates_x = dense(x, p[prefix + "weight_ih"], p[prefix + "bias_ih"]).unbind(1)
        w_hh, b_hh = p[prefix + "weight_hh"], p[prefix + "bias_hh"]
        step = self._gru_step if self.kind == "gru" else self._lstm_step
        outputs = []
        for t in range(steps):
            if keep is not None:
                state = state * keep[t]
            state, out = step(gates_x[t], dense(state[..., : self.size], w_hh, b_hh), state)
            outputs.append(out)
        return torch.stack(outputs, dim=1), state

    def _gru_step(self, gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        x_r, x_z, x_n = gx.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = torch.lerp(n, h, z)  # (1 - z) * n + z * h
        return h, h

    def _lstm_step(self, gx: Tensor, gh: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        c = state[..., self.size :]
        i, f, g, o = (gx + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return torch.cat([h, c], dim=-1), h


def make_cell(trunk: str, input_dim: int, size: int, chrono_horizon: int = 0, layers: int = 1) -> nn.Module:
    """The recurrent cell of a trunk: :class:`RecurrentCell` (GRU, LSTM) or
    :class:`agents.nets.scan_cell.MinGRUCell` (the parallel-scan trunk ``"mingru"``).

    Chrono initialisation of the minGRU: its update gate ``z`` *writes* (``h = (1 - z) h +
    z h~``), so its bias is ``-log U(1, T_max - 1)``, keeping ``1 - z`` between 1/2 and
    ``1 - 1/T_max``, the same timescales as the GRU's keep gate.

    Example:
        >>> cell = make_cell("mingru", input_dim=3, size=4, chrono_horizon=100)
        >>> bool((cell.bias_ih[:4] < 0).all()), cell.state_size
        (True, 4)
    """
    if trunk not in ("gru", "lstm", "mingru"):
        raise ValueError(f"unknown recurrent trunk {trunk!r}; allowed: gru, lstm, mingru")
    check_rnn_layers(trunk, layers)
    if trunk in ("gru", "lstm"):
        return RecurrentCell(trunk, input_dim, size, chrono_horizon)
    cell = MinGRUCell(input_dim, size, layers=layers)
    if chrono_horizon > 1:
        with torch.no_grad():
            for layer in range(layers):
                bias = getattr(cell, layer_param_names(layer)[1])
                bias[:size] = -torch.log(torch.empty(size).uniform_(1.0, max(chrono_horizon - 1, 1.0 + 1e-3)))
    return cell


class _Trunk(nn.Module):
    """Per-step features: the observation (MLP) or ``[cell output, observation]`` (RNN)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.cell = (make_cell(config.trunk, config.cell_input_dim, config.rnn_size, config.chrono_horizon,
                               config.rnn_layers) if config.recurrent else None)

    @property
    def feature_dim(self) -> int:
        return self.config.input_dim + (self.config.rnn_size if self.config.recurrent else 0)

    def cell_inputs(self, obs: Tensor, prev_action: Tensor | None, prev_reward: Tensor | None) -> Tensor:
        """What the recurrent cell reads at each step: ``[obs, prev action, prev reward]``."""
        inputs = [obs]
        if self.config.prev_action:
            inputs.append(prev_action)
        if self.config.prev_reward:
            inputs.append(prev_reward.unsqueeze(-1))
        return torch.cat(inputs, dim=-1) if len(inputs) > 1 else obs

    def features(
        self,
        p: Params,
        obs: Tensor,
        prev_action: Tensor | None,
        prev_reward: Tensor | None,
        state: Tensor | None,
        reset: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        if self.cell is None:
            return obs, None
        out, state = self.cell.run(p, "cell.", self.cell_inputs(obs, prev_action, prev_reward), state, reset)
        return torch.cat([out, obs], dim=-1), state

    @torch.no_grad()
    def initial_state(
        self,
        obs: Tensor,
        prev_action: Tensor | None,
        prev_reward: Tensor | None,
        mask: Tensor,
        params: Params | None = None,
    ) -> Tensor | None:
        """The recurrent state after a right-aligned prefix of steps, without gradient.

        ``mask [B, P]`` marks the real steps (a row's prefix ends at ``P``; left padding is
        0). The state is zeroed just before each row's first real step, so padding leaves
        no trace, and rows without a prefix get the zero state. None for the MLP.

        Example:
            >>> config = NetworkConfig(input_dim=2, trunk="gru", hidden_sizes=(4,), rnn_size=3)
            >>> actor = Actor(config)
            >>> obs, act, rew = torch.randn(2, 5, 2), torch.randn(2, 5, 4), torch.zeros(2, 5)
            >>> mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.float32)
            >>> state = actor.initial_state(obs, act, rew, mask)
            >>> _, _, direct = actor(obs[:1, 2:], act[:1, 2:], rew[:1, 2:])
            >>> torch.allclose(state[0], direct[0], atol=1e-6), state[1].abs().sum().item()
            (True, 0.0)
        """
        if self.cell is None or obs.shape[1] == 0:
            return None
        real = mask > 0
        reset = real & ~torch.cat([real.new_zeros(real.shape[0], 1), real[:, :-1]], dim=1)
        _, state = self.features(own_params(self, params), obs, prev_action, prev_reward, None, reset)
        return state * real.any(1, keepdim=True).to(state.dtype)


class Actor(_Trunk):
    """Squashed-Gaussian policy head over a trunk; see the module docstring.

    ``forward(obs, prev_action, prev_reward, task, state=None, reset=None, params=None)``
    returns ``(mean, log_std, state)``, each ``[B, T, action_dim]`` (state ``[B, S]`` or None).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__(config)
        self.body = MLPBody(self.feature_dim, config.hidden_sizes, config.body)
        width = config.hidden_sizes[-1]
        self.mean = _glorot_linear(width, config.num_heads * config.action_dim)
        self.log_std = _glorot_linear(width, config.num_heads * config.action_dim)

    def forward(
        self,
        obs: Tensor,
        prev_action: Tensor | None = None,
        prev_reward: Tensor | None = None,
        task: Tensor | None = None,
        state: Tensor | None = None,
        reset: Tensor | None = None,
        params: Params | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        p = own_params(self, params)
        feats, state = self.features(p, obs, prev_action, prev_reward, state, reset)
        mean, log_std = self.policy(feats, task, params=p)
        return mean, log_std, state

    def policy(self, features: Tensor, task: Tensor | None, params: Params | None = None) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)`` from per-step trunk features (the part after the cell)."""
        p = own_params(self, params)
        x = self.body.run(p, "body.", features)
        heads = self.config.num_heads
        mean = pick_head(_linear(p, "mean", x), task, heads)
        log_std = pick_head(_linear(p, "log_std", x), task, heads).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


class QNetwork(_Trunk):
    """One critic ``Q(history, action)``; multi-head over tasks like the actor.

    Split in two so the SAC update can reuse the trunk's features: :meth:`encode` (the
    recurrent part, per step) and :meth:`values` (the body on ``[features, action]``).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__(config)
        self.body = MLPBody(self.feature_dim + config.action_dim, config.hidden_sizes, config.body)
        self.head = _glorot_linear(config.hidden_sizes[-1], config.num_heads)

    def encode(self, obs, prev_action=None, prev_reward=None, state=None, reset=None, params: Params | None = None):
        """Per-step features ``[B, T, F]`` and the last recurrent state."""
        return self.features(own_params(self, params), obs, prev_action, prev_reward, state, reset)

    def feature_part(self, features: Tensor, params: Params | None = None) -> Tensor:
        """The first body layer's product with the features alone, ``W_f f`` (no bias).

        The body reads ``[features, action]``, so its first layer is ``W_f f + W_a a + b``.
        The SAC update values two actions at the same features (the replayed one for the
        critic loss, the policy's for the actor loss); passing this to :meth:`values` as
        ``feature_part`` (detached for the actor's term, whose gradient reaches only the
        action) computes ``W_f f`` once.
        """
        weight = own_params(self, params)["body.layers.0.weight"]
        return dense(features, weight[..., : features.shape[-1]])

    def values(self, features: Tensor | None, action: Tensor, task: Tensor | None, params: Params | None = None,
               feature_part: Tensor | None = None) -> Tensor:
        """``Q`` of ``action`` at each step, ``[B, T]``; from ``feature_part`` (:meth:`feature_part`)
        instead of ``features`` when it is given."""
        p = own_params(self, params)
        if feature_part is None:
            x = self.body.run(p, "body.", torch.cat([features, action], dim=-1))
        else:
            weight = p["body.layers.0.weight"]
            first = feature_part + dense(action, weight[..., weight.shape[-1] - action.shape[-1]:],
                                         p["body.layers.0.bias"])
            x = self.body.run(p, "body.", None, first=first)
        return pick_head(_linear(p, "head", x), task, self.config.num_heads).squeeze(-1)

    def forward(self, obs, action, prev_action=None, prev_reward=None, task=None, state=None, reset=None, params=None):
        """``Q(obs history, action)`` ``[B, T]`` and the last recurrent state."""
        p = own_params(self, params)
        feats, state = self.features(p, obs, prev_action, prev_reward, state, reset)
        x = self.body.run(p, "body.", torch.cat([feats, action], dim=-1))
        return pick_head(_linear(p, "head", x), task, self.config.num_heads).squeeze(-1), state


class TwinCritic(nn.Module):
    """Two independent critics (clipped double Q); parameters ``q1.*`` and ``q2.*``."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.q1, self.q2 = QNetwork(config), QNetwork(config)

    @property
    def critics(self) -> tuple[QNetwork, QNetwork]:
        return self.q1, self.q2

    def forward(self, obs, action, prev_action=None, prev_reward=None, task=None, params: Params | None = None) -> Tensor:
        """Both critics' ``Q`` values stacked, ``[2, B, T]`` (fresh recurrent state)."""
        p = own_params(self, params)
        return torch.stack([q(obs, action, prev_action, prev_reward, task, params=sub_params(p, name))[0]
                            for name, q in (("q1", self.q1), ("q2", self.q2))])


def shared_input_features(
    trunks: list[tuple[_Trunk, Params | None]],
    obs: Tensor,
    prev_action: Tensor | None,
    prev_reward: Tensor | None,
    states: list[Tensor | None],
) -> list[Tensor]:
    """Per-step features ``[B, T, F]`` of several recurrent trunks that read the same inputs.

    The SAC update runs five cells over one batch (actor, two critics, two target
    critics). GRU cells on CPU run as one stacked sequence kernel (one batched matrix
    product per step for all of them; :class:`agents.nets.rnn_kernels.GRUSequence`), minGRU
    cells as one scan per layer (:meth:`agents.nets.scan_cell.MinGRUCell.run_members`); anything
    else runs trunk by trunk. Either way the result equals ``trunk.features(...)``.
    """
    params = [own_params(trunk, p) for trunk, p in trunks]
    first = trunks[0][0]
    x = first.cell_inputs(obs, prev_action, prev_reward)
    same = all(t.config == first.config for t, _ in trunks)
    k = members(params[0]["cell.weight_ih"])  # a population's members (1: a single run)
    if same and first.config.trunk == "mingru":
        weights = [w for p in params for name, w in p.items() if name.startswith("cell.")]
        if not functorch_active(x, *weights, *(s for s in states if s is not None)):
            out = first.cell.run_members([sub_params(p, "cell") for p in params], "", x, states)
            return [torch.cat([member, obs], dim=-1) for member in out.unbind(0)]
    stackable = same and first.config.trunk == "gru"
    if stackable:
        weights = [p[f"cell.{name}"] for p in params for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        tensors = (x, *weights, *(s for s in states if s is not None))
        # A population's GRUs always run as members of one call (RecurrentCell._run_stacked).
        stackable = k > 1 or is_stacked(weights[0]) or sequence_kernel("gru", x.device, False, *tensors) == "gru_function"
    if not stackable:
        return [trunk.features(p, obs, prev_action, prev_reward, s, None)[0]
                for (trunk, _), p, s in zip(trunks, params, states)]
    # Members of the call: (trunk, population member) pairs, trunk-major; each has x.shape[0] / k rows.
    rows, steps, size = x.shape[0] // k, x.shape[1], first.cell.size
    gates_x = torch.stack([dense(x, p["cell.weight_ih"], p["cell.bias_ih"]).view(k, rows, steps, -1) for p in params])
    h0 = torch.stack([x.new_zeros(k, rows, size) if s is None else s.view(k, rows, size) for s in states])
    w_hh = torch.stack([p["cell.weight_hh"] for p in params]).view(-1, 3 * size, size)
    b_hh = torch.stack([p["cell.bias_hh"] for p in params]).view(-1, 3 * size)
    out, _ = GRUSequence.apply(gates_x.flatten(0, 1), h0.flatten(0, 1), w_hh, b_hh, None,
                               _leading_trained(params, states) * k)
    out = out.view(len(params), k * rows, steps, size)
    return [torch.cat([member, obs], dim=-1) for member in out.unbind(0)]


def _leading_trained(params: list[Params], states: list[Tensor | None]) -> int:
    """How many leading members of a stacked GRU call need a backward: the target
    critics come last and take no gradient, so their share of BPTT is skipped."""
    needs = [any(p[f"cell.{name}"].requires_grad for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
             or (s is not None and s.requires_grad) for p, s in zip(params, states)]
    k = needs.index(False) if False in needs else len(needs)
    return len(needs) if any(needs[k:]) else k


def sub_params(params: Params, prefix: str) -> dict[str, Tensor]:
    """The entries of ``params`` under ``prefix.``, with the prefix stripped.

    Example:
        >>> sub_params({"q1.head.bias": 1, "q2.head.bias": 2}, "q1")
        {'head.bias': 1}
    """
    start = prefix + "."
    return {k[len(start):]: v for k, v in params.items() if k.startswith(start)}


def squashed_sample(mean: Tensor, log_std: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
    """A tanh-squashed Gaussian action and its log-probability (summed over action dims).

    ``noise`` is standard normal of ``mean``'s shape, drawn by the caller (so the caller
    owns the random generator); ``None`` gives the deterministic action ``tanh(mean)``
    (its log-prob is that of the mode). Log-prob correction as in SAC (Haarnoja et al.
    2018, appendix C), in the numerically stable form ``2 (log 2 - u - softplus(-2u))``.

    Example:
        >>> action, logp = squashed_sample(torch.zeros(1, 2), torch.zeros(1, 2), None)
        >>> action.tolist(), round(logp.item(), 4)
        ([[0.0, 0.0]], -1.8379)
    """
    if noise is None:
        u, gaussian = mean, -log_std - HALF_LOG_2PI
    else:
        u, gaussian = mean + noise * log_std.exp(), -0.5 * noise.square() - log_std - HALF_LOG_2PI
    correction = 2.0 * (0.6931471805599453 - u - F.softplus(-2.0 * u))
    return torch.tanh(u), (gaussian - correction).sum(-1)
