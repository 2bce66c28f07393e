"""Hidden units of the agent's networks: which weights each unit owns, its activations,
and fresh weights from the networks' own initialisation.

Used by the plasticity methods (continual backprop, ReDo, shrink-and-perturb, resets in
``agents.protection``) and the plasticity metrics (``agents.training.plasticity``).

What a unit is. A *unit layer* is a set of ``width`` units; unit ``j`` owns

- its *incoming* weights: the entries ``j + b * width`` (``b < blocks``) along ``dim`` of
  every incoming slice; re-initialising a unit rewrites exactly these;
- its *outgoing* weights: the entries ``j`` along ``dim`` of every outgoing slice (the
  weights that read the unit); a fresh unit gets them zeroed, so it does not disturb
  what the network computes.

MLP body layer ``i`` (``Linear -> [LayerNorm ->] activation``): incoming = row ``j`` of
``layers.i.weight``, entry ``j`` of ``layers.i.bias`` (and of ``norm.weight/bias`` for the
first layer of CW's body; the ``relu`` body has no norm); outgoing = column ``j`` of the next layer's weight, or of the output heads
(actor ``mean``/``log_std``, critic ``head``) for the last layer.

Recurrent cell (GRU, LSTM): hidden unit ``j`` is the ``j``-th entry of the hidden state
``h``. Its incoming weights are its rows in *every gate block* of ``weight_ih``,
``weight_hh``, ``bias_ih`` and ``bias_hh`` (GRU: ``r, z, n``, 3 blocks; LSTM:
``i, f, g, o``, 4 blocks; for the LSTM, the cell state ``c_j`` belongs to the same unit,
since it is computed only from unit ``j``'s gate rows). Its outgoing weights are
column ``j`` of ``weight_hh`` (``h_j`` feeds every gate of every unit at the next step)
and column ``j`` of the body's first layer (the body reads ``[cell output, obs]``, so the
cell outputs are its first ``rnn_size`` columns). Why the gates go together: a gate row
of unit ``j`` acts only on ``h_j``/``c_j``, so replacing some gate rows but not others
would leave a unit half old, half new; and zeroing only the outgoing columns makes the
whole unit invisible to the rest of the network at once.

One exception to "invisible once its outgoing weights are zero": the body's first layer
is LayerNorm'd, so each of its units also enters the mean and variance that normalise
the others; a fresh unit there shifts its neighbours slightly (a test checks that every
other unit layer is exactly invisible).

Stacked minGRU layers (``rnn_layers > 1``): layer ``l`` is its own unit layer (``cell`` for
the bottom one, ``cell.l1``, ... above), with the same incoming slices in its own weights
(``weight_ih_l{l}``, ``bias_ih_l{l}``); the weights that read it are the first ``rnn_size``
columns of the next layer's ``weight_ih`` (which reads ``[h, x]``), or the body's for the top
layer.

A new trunk is one entry of :data:`CELL_UNITS` (its incoming slices with their gate
block count, and its recurrent outgoing slices); the body and heads are shared.

Example:
    >>> from agents.nets.networks import Actor, NetworkConfig
    >>> actor = Actor(NetworkConfig(input_dim=3, trunk="gru", hidden_sizes=(8, 6), rnn_size=5))
    >>> [(layer.name, layer.width) for layer in unit_layers(actor)]
    [('cell', 5), ('body.0', 8), ('body.1', 6)]
    >>> cell = unit_layers(actor)[0]
    >>> cell.incoming[0], cell.outgoing[-1]
    (Slice(param='cell.weight_ih', dim=0, blocks=3), Slice(param='body.layers.0.weight', dim=1, blocks=1))
    >>> cell.indices(cell.incoming[0], torch.tensor([1]))  # rows of unit 1 in the r, z, n blocks
    tensor([ 1,  6, 11])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch
from torch import Tensor, nn

from agents.nets.networks import Actor, QNetwork
from agents.nets.scan_cell import layer_param_names

if TYPE_CHECKING:  # pragma: no cover
    from agents.replay import Batch
    from agents.sac import SAC


@dataclass(frozen=True)
class Slice:
    """The entries of parameter ``param`` that belong to a unit: ``j + b * width`` for
    ``b < blocks`` along ``dim``."""

    param: str
    dim: int
    blocks: int = 1


# trunk -> (incoming slices of a hidden unit, recurrent outgoing slices); the body's first
# layer column is added for every trunk.
CELL_UNITS: dict[str, tuple[tuple[Slice, ...], tuple[Slice, ...]]] = {
    "gru": (tuple(Slice(f"cell.{p}", 0, 3) for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
            (Slice("cell.weight_hh", 1),)),
    "lstm": (tuple(Slice(f"cell.{p}", 0, 4) for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
             (Slice("cell.weight_hh", 1),)),
    # minGRU: unit j is its row in the z and h~ blocks; no recurrent weight, so its only
    # outgoing weights are the body's (the state feeds back only through itself).
    "mingru": (tuple(Slice(f"cell.{p}", 0, 2) for p in ("weight_ih", "bias_ih")), ()),
}
# The bias that absorbs an outgoing weight's mean contribution when a unit is replaced
# (continual backprop's bias correction); None: no bias reads that slice.
OUTGOING_BIAS = {"cell.weight_hh": "cell.bias_hh"}


@dataclass(frozen=True)
class UnitLayer:
    """``width`` units with their incoming and outgoing slices (see the module docstring)."""

    name: str
    width: int
    incoming: tuple[Slice, ...]
    outgoing: tuple[Slice, ...]

    def indices(self, piece: Slice, units: Tensor) -> Tensor:
        """Indices along ``piece.dim`` of ``units`` in ``piece``."""
        offsets = torch.arange(piece.blocks, device=units.device) * self.width
        return (offsets[:, None] + units[None, :]).reshape(-1)


def unit_layers(net: nn.Module) -> list[UnitLayer]:
    """The unit layers of an :class:`~agents.nets.networks.Actor` or :class:`~agents.nets.networks.QNetwork`."""
    config = net.config
    layers: list[UnitLayer] = []
    if config.recurrent:
        if config.trunk not in CELL_UNITS:
            raise ValueError(f"no unit table for trunk {config.trunk!r}; add it to agents.nets.units.CELL_UNITS "
                             f"(known: {', '.join(CELL_UNITS)})")
        layers += cell_unit_layers(config)
    heads = ("mean.weight", "log_std.weight") if isinstance(net, Actor) else ("head.weight",)
    sizes = config.hidden_sizes
    for i, width in enumerate(sizes):
        incoming = [Slice(f"body.layers.{i}.weight", 0), Slice(f"body.layers.{i}.bias", 0)]
        if i == 0 and config.body == "cw":
            incoming += [Slice("body.norm.weight", 0), Slice("body.norm.bias", 0)]
        outgoing = (Slice(f"body.layers.{i + 1}.weight", 1),) if i + 1 < len(sizes) else tuple(Slice(h, 1) for h in heads)
        layers.append(UnitLayer(f"body.{i}", width, tuple(incoming), outgoing))
    return layers


def cell_unit_layers(config) -> list[UnitLayer]:
    """The recurrent cell's unit layers, bottom first (one unless minGRU layers are stacked)."""
    incoming, outgoing = CELL_UNITS[config.trunk]
    body = Slice("body.layers.0.weight", 1)
    if config.rnn_layers == 1:
        return [UnitLayer("cell", config.rnn_size, incoming, (*outgoing, body))]
    layers = []
    for layer in range(config.rnn_layers):
        rename = dict(zip(layer_param_names(0), layer_param_names(layer)))
        own = tuple(Slice("cell." + rename[piece.param[len("cell."):]], piece.dim, piece.blocks) for piece in incoming)
        above = Slice("cell." + layer_param_names(layer + 1)[0], 1) if layer + 1 < config.rnn_layers else body
        layers.append(UnitLayer("cell" if layer == 0 else f"cell.l{layer}", config.rnn_size, own, (above,)))
    return layers


def outgoing_bias(piece: Slice) -> str | None:
    """The bias added to what ``piece`` computes (``x.weight`` -> ``x.bias``; a stacked
    minGRU layer's ``weight_ih_l{k}`` -> ``bias_ih_l{k}``)."""
    if piece.param in OUTGOING_BIAS:
        return OUTGOING_BIAS[piece.param]
    if piece.param.startswith("cell.weight_ih_l"):
        return piece.param.replace("weight_ih", "bias_ih")
    return piece.param[: -len("weight")] + "bias" if piece.param.endswith(".weight") else None


def networks(agent: "SAC") -> list[tuple[str, nn.Module]]:
    """The networks whose units the plasticity methods and metrics treat: actor, q1, q2."""
    return [("actor", agent.actor), ("q1", agent.critic.q1), ("q2", agent.critic.q2)]


def body_activations(body: nn.Module, p: dict[str, Tensor], prefix: str, x: Tensor) -> list[Tensor]:
    """Every hidden layer's output of an :class:`~agents.nets.networks.MLPBody`, of either kind."""
    return body.layer_outputs(p, prefix, x)


def activations(agent: "SAC", name: str, net: nn.Module, batch: "Batch") -> dict[str, Tensor]:
    """Unit layer name -> activations ``[N, width]`` of ``net`` on the counted steps of ``batch``
    (the rows and steps where ``batch.mask`` is 1), as the SAC update runs it: the actor
    on the observations, a critic on ``[features, batch action]``; recurrent cells from a
    zero state at the window start."""
    steps = batch.steps
    obs = agent.net_obs(batch.obs)[:, :steps].contiguous()
    p = dict(net.named_parameters())
    prev_action = None if batch.prev_action is None else batch.prev_action[:, :steps]
    prev_reward = None if batch.prev_reward is None else batch.prev_reward[:, :steps]
    out: dict[str, Tensor] = {}
    if net.config.recurrent and net.config.rnn_layers > 1:  # every stacked layer's outputs, from one run
        inputs = net.cell_inputs(obs, prev_action, prev_reward)
        outputs, _ = net.cell.run_layers(p, "cell.", inputs, None, None)
        out.update((layer.name, value) for layer, value in zip(cell_unit_layers(net.config), outputs))
        feats = torch.cat([outputs[-1], obs], dim=-1)  # what features() returns
    else:
        feats, _ = net.features(p, obs, prev_action, prev_reward, None, None)
        if net.config.recurrent:
            out["cell"] = feats[..., : net.config.rnn_size]
    if isinstance(net, QNetwork):
        feats = torch.cat([feats, batch.action], dim=-1)
    for i, x in enumerate(body_activations(net.body, p, "body.", feats)):
        out[f"body.{i}"] = x
    keep = batch.mask.reshape(-1) > 0
    return {key: value.reshape(-1, value.shape[-1])[keep] for key, value in out.items()}


def fresh_network(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """A newly initialised copy of ``net`` (same class and config), seeded from ``generator``:
    every weight is drawn from exactly the network's own initialisation (Glorot, orthogonal
    per gate, LayerNorm 1/0, LSTM forget bias 1), and the global torch stream is untouched."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU init; torch.manual_seed would also touch CUDA (slow)
        config = net.config if hasattr(net, "config") else net.q1.config  # TwinCritic holds its config in q1, q2
        fresh = type(net)(config)
    device = next(net.parameters()).device
    return fresh.to(device)


def optimizer_moments(agent: "SAC", param: Tensor) -> Iterator[Tensor]:
    """Adam's per-entry state tensors (``exp_avg``, ``exp_avg_sq``, ...) of ``param``."""
    optimizer = getattr(agent, "optimizer", None)
    state = optimizer.state.get(param, {}) if optimizer is not None else {}
    for key, value in state.items():
        if key != "step" and isinstance(value, Tensor) and value.shape == param.shape:
            yield value


@torch.no_grad()
def reinit_units(agent: "SAC", net: nn.Module, layer: UnitLayer, units: Tensor, fresh: nn.Module,
                 zero_outgoing: bool = True, reset_optimizer: bool = True) -> None:
    """Give ``units`` of ``layer`` their weights in ``fresh`` (incoming), zero their outgoing
    weights, and zero Adam's moments of every entry touched."""
    if units.numel() == 0:
        return
    own, new = dict(net.named_parameters()), dict(fresh.named_parameters())
    for piece in layer.incoming:
        index = layer.indices(piece, units)
        own[piece.param].index_copy_(piece.dim, index, new[piece.param].index_select(piece.dim, index))
        if reset_optimizer:
            for moment in optimizer_moments(agent, own[piece.param]):
                moment.index_fill_(piece.dim, index, 0.0)
    if zero_outgoing:
        for piece in layer.outgoing:
            index = layer.indices(piece, units)
            own[piece.param].index_fill_(piece.dim, index, 0.0)
            if reset_optimizer:
                for moment in optimizer_moments(agent, own[piece.param]):
                    moment.index_fill_(piece.dim, index, 0.0)
