"""Plasticity methods (issue 12): the after-step hook, the unit table, each method's
mechanism against a broken version of itself, the readouts on hand-made cases, bad
input, and exact checkpoint resume with every method."""

from __future__ import annotations

import copy

import pytest
import torch

from agents.nets.networks import Actor, NetworkConfig, QNetwork
from agents.training.plasticity import dormant_fraction, plasticity_columns, plasticity_metrics, srank
from agents.protection import Protection, make_protection
from agents.protection.cbp import ContinualBackprop
from agents.protection.redo import ReDo, dormant_scores
from agents.protection.shrink_perturb import ShrinkPerturb
from agents.sac import SAC
from agents.nets.units import activations, body_activations, fresh_network, networks, reinit_units, unit_layers
from contenv.evaluation.metrics import learning_speed, learning_speed_trend
from tests.protection_helpers import fill, make_agent, registered_protections, tiny_config, tiny_env  # noqa: F401

TRUNKS = ("mlp", "gru", "lstm")


def _snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _ready(agent, task=0):
    """An agent mid-task with a filled replay and Adam state."""
    agent._start_task(task)
    fill(agent, task)
    for _ in range(3):
        agent.gradient_step()
    return agent


# ---------------------------------------------------------------------- the hook
class _Order(Protection):
    name = "order"

    def __init__(self):
        self.calls = []

    def after_backward(self, agent):
        self.before = _snapshot(agent.actor)
        self.calls.append("after_backward")

    def after_step(self, agent):
        changed = any(not torch.equal(self.before[n], p) for n, p in agent.actor.named_parameters())
        self.calls.append(("after_step", changed, agent.num_updates))


def test_after_step_runs_once_per_update_right_after_the_optimizer_step():
    method = _Order()
    agent = _ready(make_agent(protection=method))
    assert method.calls == ["after_backward", ("after_step", True, 0)] * 1 + [
        "after_backward", ("after_step", True, 1), "after_backward", ("after_step", True, 2)]


def test_composite_chains_after_step_in_member_order():
    first, second = _Order(), _Order()
    second.name = "order2"
    from agents.protection.compose import Composite

    agent = _ready(make_agent(protection=Composite([first, second])))
    assert [c for c in first.calls if c != "after_backward"] == [c for c in second.calls if c != "after_backward"]
    assert len(first.calls) == 6


# ---------------------------------------------------------------------- units
@pytest.mark.parametrize("trunk,layers,body", [(trunk, 1, "cw") for trunk in TRUNKS]
                         + [("mingru", 1, "cw"), ("mingru", 3, "cw"), ("mlp", 1, "relu"), ("gru", 1, "relu")])
@pytest.mark.parametrize("kind", [Actor, QNetwork])
def test_a_unit_with_zeroed_outgoing_weights_is_invisible_whatever_its_incoming_weights(trunk, layers, body, kind):
    """The outgoing slices cover every path out of a unit (incl. the recurrent one and the
    next stacked layer); except in CW's LayerNorm'd first body layer, where every unit also
    enters the norm's statistics (the relu body has no norm, so there it holds too)."""
    torch.manual_seed(0)
    net = kind(NetworkConfig(input_dim=3, trunk=trunk, hidden_sizes=(6, 5), rnn_size=4, rnn_layers=layers, body=body))
    if layers > 1:
        assert [layer.name for layer in unit_layers(net)][:layers] == ["cell", "cell.l1", "cell.l2"]
    obs, prev_action, prev_reward = torch.randn(2, 5, 3), torch.randn(2, 5, 4), torch.randn(2, 5)
    action = torch.randn(2, 5, 4)

    def output():
        if kind is Actor:
            return net(obs, prev_action, prev_reward)[0]
        return net(obs, action, prev_action, prev_reward)[0]

    for layer in unit_layers(net):
        if layer.name == "body.0" and body == "cw":
            continue
        units = torch.tensor([1])
        with torch.no_grad():
            reinit_units(None, net, layer, units, fresh_network(net, torch.Generator().manual_seed(1)))
        before = output()
        params = dict(net.named_parameters())
        with torch.no_grad():
            for piece in layer.incoming:
                params[piece.param].index_add_(piece.dim, layer.indices(piece, units),
                                               torch.ones_like(params[piece.param].index_select(
                                                   piece.dim, layer.indices(piece, units))))
        assert torch.allclose(output(), before, atol=1e-6), layer.name
        # ... and the incoming weights do drive the unit (the slices are its own rows)
        acts = body_activations(net.body, params, "body.", torch.zeros(1, net.body.layers[0].in_features))
        assert acts[-1].shape[-1] == net.config.hidden_sizes[-1]


@pytest.mark.parametrize("trunk,blocks", [("gru", 3), ("lstm", 4)])
def test_a_recurrent_unit_owns_its_row_in_every_gate_block(trunk, blocks):
    net = Actor(NetworkConfig(input_dim=3, trunk=trunk, hidden_sizes=(6,), rnn_size=4))
    cell = unit_layers(net)[0]
    fresh = fresh_network(net, torch.Generator().manual_seed(3))
    before = _snapshot(net)
    with torch.no_grad():
        reinit_units(None, net, cell, torch.tensor([2]), fresh)
    changed = (net.cell.weight_ih != before["cell.weight_ih"]).any(1).nonzero().flatten().tolist()
    assert changed == [2 + 4 * b for b in range(blocks)]
    assert torch.equal(net.cell.weight_ih[changed], fresh.cell.weight_ih[changed])
    assert (net.cell.weight_hh[:, 2] == 0).all() and (net.body.layers[0].weight[:, 2] == 0).all()
    assert (net.body.layers[0].weight[:, 3] == before["body.layers.0.weight"][:, 3]).all()


@pytest.mark.parametrize("trunk,body", [(trunk, "cw") for trunk in TRUNKS] + [("gru", "relu")])
def test_recorded_body_activations_match_the_network(trunk, body):
    agent = _ready(make_agent(trunk, body=body))
    batch = agent.replay.sample(8)
    acts = activations(agent, "actor", agent.actor, batch)
    p = dict(agent.actor.named_parameters())
    obs = agent.net_obs(batch.obs)[:, : batch.steps]
    prev_a = None if batch.prev_action is None else batch.prev_action[:, : batch.steps]
    prev_r = None if batch.prev_reward is None else batch.prev_reward[:, : batch.steps]
    feats, _ = agent.actor.features(p, obs, prev_a, prev_r, None, None)
    expected = agent.actor.body.run(p, "body.", feats).reshape(-1, 8)[batch.mask.reshape(-1) > 0]
    assert torch.allclose(acts["body.1"], expected)


# ---------------------------------------------------------------------- continual backprop
def _replaced_by(utility):
    """Which unit of the actor's last body layer CBP replaces when unit 0 is loud but unread
    (zero outgoing weights) and unit 1 is quiet but read strongly."""
    agent = make_agent(protection=ContinualBackprop(maturity=1, rate=1 / 8, utility=utility))
    _ready(agent)
    cbp = agent.protection
    layer = unit_layers(agent.actor)[-1]
    params = dict(agent.actor.named_parameters())
    with torch.no_grad():
        for head in ("mean.weight", "log_std.weight"):
            params[head][:, 0] = 0.0
            params[head][:, 1] = 5.0
    h = torch.ones(16, 8)
    h[:, 0], h[:, 1] = 10.0, 0.5
    key = "actor/body.1"
    cbp.age[key].fill_(5.0)
    cbp.utility[key].zero_()
    cbp.pending[key] = 0.0
    return cbp._test(key, layer, h, params).tolist()


def test_cbp_replaces_the_unit_that_contributes_least_not_the_quietest():
    assert _replaced_by("contribution") == [0]
    # the broken utility (ignores outgoing weights) replaces the unit the output relies on
    assert _replaced_by("activation") == [1]


def _optimizer_rows_reset(agent, layer_key, units):
    net = dict(networks(agent))[layer_key.split("/")[0]]
    layer = {f"{layer_key.split('/')[0]}/{l.name}": l for l in unit_layers(net)}[layer_key]
    params = dict(net.named_parameters())
    piece = layer.incoming[0]
    moments = agent.optimizer.state[params[piece.param]]["exp_avg"]
    rows = layer.indices(piece, units)
    others = torch.ones(moments.shape[0], dtype=torch.bool)
    others[rows] = False
    return bool((moments[rows] == 0).all()) and bool((moments[others] != 0).any())


@pytest.mark.parametrize("trunk", TRUNKS)
@pytest.mark.parametrize("broken", [False, True])
def test_cbp_resets_the_adam_moments_of_replaced_units_only(trunk, broken, monkeypatch):
    import agents.protection.cbp as cbp_module

    if broken:  # replaced units keep their optimizer state
        real = cbp_module.reinit_units
        monkeypatch.setattr(cbp_module, "reinit_units",
                            lambda *a, **k: real(*a, **{**k, "reset_optimizer": False}))
    agent = _ready(make_agent(trunk, protection=ContinualBackprop(maturity=2, rate=0.05)))
    key = "actor/cell" if trunk != "mlp" else "actor/body.0"
    before = copy.deepcopy(agent.protection.replaced)
    for _ in range(40):
        agent.gradient_step()
        replaced = agent.protection.replaced[key] - before[key]
        if replaced:
            break
    assert replaced, "no unit was due"
    units = (agent.protection.age[key] == 0).nonzero().flatten()
    assert _optimizer_rows_reset(agent, key, units) is (not broken)


def test_cbp_keeps_the_output_where_it_was_through_the_mean_correction():
    agent = _ready(make_agent("mlp", protection=ContinualBackprop(maturity=1, rate=0.2)))
    cbp = agent.protection
    batch = agent.replay.sample(8)
    layer = unit_layers(agent.actor)[-1]
    acts = activations(agent, "actor", agent.actor, batch)
    key = "actor/body.1"
    with torch.no_grad():  # a unit whose activation is constant: the correction is exact
        agent.actor.body.layers[1].weight[3] = 0.0
        agent.actor.body.layers[1].bias[3] = 0.7
    acts = activations(agent, "actor", agent.actor, batch)
    cbp.mean_activation[key][3] = acts["body.1"][:, 3].mean() * (1 - cbp.decay ** cbp.age[key][3])
    obs, task = agent.net_obs(batch.obs)[:, :1], batch.task
    before = agent.actor(obs, task=task)[0]
    with torch.no_grad():
        cbp._generate(agent, agent.actor, layer, key, torch.tensor([3]), fresh_network(agent.actor, cbp.generator),
                      dict(agent.actor.named_parameters()))
    assert torch.allclose(agent.actor(obs, task=task)[0], before, atol=1e-5)


# ---------------------------------------------------------------------- shrink-perturb, l2-init, redo, reset-last
def test_shrink_perturb_is_shrink_times_weights_plus_perturb_times_a_fresh_draw():
    method = ShrinkPerturb(shrink=0.5, perturb=0.1)
    agent = _ready(make_agent("gru", protection=method))
    before, target_before = _snapshot(agent.actor), _snapshot(agent.target_critic)
    generator = copy.deepcopy(method.generator)
    agent._start_task(1)
    fresh = fresh_network(agent.actor, generator)
    fresh_critic = fresh_network(agent.critic, generator)
    for name, p in agent.actor.named_parameters():
        assert torch.allclose(p, 0.5 * before[name] + 0.1 * dict(fresh.named_parameters())[name], atol=1e-7)
    for name, p in agent.target_critic.named_parameters():
        assert torch.allclose(p, 0.5 * target_before[name] + 0.1 * dict(fresh_critic.named_parameters())[name])
    with pytest.raises(ValueError, match="changes nothing"):  # the broken version is refused
        ShrinkPerturb(shrink=1.0, perturb=0.0)


def test_shrink_perturb_every_k_updates_and_not_at_the_first_task_start():
    method = ShrinkPerturb(every=2, at_task_start=True)
    agent = _ready(make_agent(protection=method))  # 3 updates, first task start
    assert method.applied == 1


def test_l2_init_pulls_towards_the_initial_weights_across_task_changes():
    agent = make_agent(protection=make_protection("l2-init", coefficient=1.0))
    initial = _snapshot(agent.actor)
    _ready(agent)
    agent._start_task(1)  # task changes do not move the anchor (unlike L2 towards the last task)
    for name, p in agent.actor.named_parameters():
        assert torch.equal(agent.protection.initial[f"actor.{name}"], initial[name])
    distance = sum((p - initial[n]).square().sum() for n, p in agent.actor.named_parameters())
    critic_distance = sum((p - agent.protection.initial[f"critic.{n}"]).square().sum()
                          for n, p in agent.critic.named_parameters())
    assert distance > 0
    assert torch.allclose(agent.protection.loss(agent, None), distance + critic_distance)


@pytest.mark.parametrize("trunk", TRUNKS)
def test_redo_recycles_exactly_the_dormant_units(trunk):
    agent = _ready(make_agent(trunk, protection=ReDo(tau=0.1, every=1)))
    with torch.no_grad():  # units 2 and 5 of the last body layer are dead: zero input weights and bias
        agent.actor.body.layers[1].weight[[2, 5]] = 0.0
        agent.actor.body.layers[1].bias[[2, 5]] = 0.0
    agent.protection._batch = batch = agent.replay.sample(8)
    dormant = (dormant_scores(activations(agent, "actor", agent.actor, batch)["body.1"]) <= 0.1).nonzero().flatten()
    before, count = _snapshot(agent.actor), agent.protection.recycled["actor/body.1"]
    agent.protection.after_step(agent)
    rows = (agent.actor.body.layers[1].weight != before["body.layers.1.weight"]).any(1).nonzero().flatten().tolist()
    assert {2, 5} <= set(rows) and rows == dormant.tolist()
    assert (agent.actor.mean.weight[:, rows] == 0).all()
    assert agent.protection.recycled["actor/body.1"] - count == len(rows)


def test_redo_on_the_relu_body_recycles_its_dead_units_and_cuts_their_outgoing_weights():
    """A ReLU unit with zero incoming weights outputs 0 on every input: dormant (CW's tanh/leaky body
    has no such units, which is what the relu body is for)."""
    agent = _ready(make_agent("mlp", protection=ReDo(tau=0.0, every=1), body="relu"))
    with torch.no_grad():
        agent.actor.body.layers[0].weight[[1, 6]] = 0.0
        agent.actor.body.layers[0].bias[[1, 6]] = 0.0
    agent.protection._batch = batch = agent.replay.sample(8)
    dead = (activations(agent, "actor", agent.actor, batch)["body.0"] == 0).all(0).nonzero().flatten().tolist()
    assert {1, 6} <= set(dead)
    before = _snapshot(agent.actor)
    agent.protection.after_step(agent)
    rows = (agent.actor.body.layers[0].weight != before["body.layers.0.weight"]).any(1).nonzero().flatten().tolist()
    assert rows == dead
    after, old = agent.actor.body.layers[1].weight, before["body.layers.1.weight"]
    alive = [j for j in range(after.shape[1]) if j not in dead]
    fresh_rows = (after[:, alive] != old[:, alive]).any(1)  # body.1 units recycled too get fresh rows
    assert (after[~fresh_rows][:, dead] == 0).all() and (~fresh_rows).any()


def test_reset_last_resets_the_heads_at_task_starts_after_the_first_only():
    agent = _ready(make_agent("gru", protection=make_protection("reset-last", layers=2)))
    before = _snapshot(agent.actor)
    critic_before = _snapshot(agent.critic)
    agent._start_task(1)
    for name, p in agent.actor.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == name.startswith(("mean.", "log_std.", "body.layers.1.")), name
    assert not torch.equal(agent.critic.q1.head.weight, critic_before["q1.head.weight"])
    assert torch.equal(agent.target_critic.q1.head.weight, agent.critic.q1.head.weight)
    assert torch.equal(agent.critic.q1.cell.weight_ih, critic_before["q1.cell.weight_ih"])


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,message", [
    (lambda: make_protection("cpb"), "Did you mean: cbp"),
    (lambda: make_protection("cbp", rate=-0.1), r"rate must lie in \[0, 1\]"),
    (lambda: make_protection("cbp", rate=1.5), r"rate must lie in \[0, 1\]"),
    (lambda: make_protection("cbp", maturity=0), "maturity must be > 0"),
    (lambda: make_protection("cbp", utility="magic"), "allowed: contribution, activation"),
    (lambda: make_protection("cbp+packnet"), "do not combine"),
    (lambda: make_protection("cbp+redo"), "recycle units"),
    (lambda: make_protection("hnet+shrink-perturb"), "do not combine"),
    (lambda: make_protection("shrink-perturb", every=None, at_task_start=False), "never acts"),
    (lambda: make_protection("redo", every=0), "every must be a positive"),
    (lambda: make_protection("l2-init", coefficient=-1), "must be >= 0"),
    (lambda: make_agent(protection=make_protection("reset-last", layers=9)), "has only 3 layers"),
])
def test_bad_input_is_refused_with_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cbp_composes_with_ewc():
    agent = _ready(make_agent(protection=make_protection("cbp+ewc", cbp={"maturity": 1, "rate": 0.1})))
    assert agent.protection.names == ["cbp", "ewc"]
    assert sum(agent.protection.members[0].replaced.values()) > 0


# ---------------------------------------------------------------------- readouts
def test_dormant_fraction_and_srank_of_hand_made_cases():
    h = torch.rand(32, 10) + 0.5
    h[:, [1, 4, 7]] = 0.0
    assert dormant_fraction([h]) == 0.3
    assert dormant_fraction([h, torch.ones(4, 10)]) == 0.15
    basis = torch.linalg.qr(torch.randn(12, 3))[0]  # three orthonormal directions, equal weight
    features = torch.randn(64, 3) @ torch.diag(torch.tensor([1.0, 1.0, 1.0])) @ basis.T
    assert srank(features) == 3
    skewed = torch.cat([torch.eye(5) * torch.tensor([1.0, 1.0, 1.0, 1.0, 1e-4]), torch.zeros(5, 3)], 1)
    assert srank(skewed) == 4  # the fifth direction carries < 1 % of the spectrum
    assert srank(torch.zeros(4, 4)) == 0


def test_plasticity_metrics_see_known_dead_units_and_leave_training_alone():
    agent = _ready(make_agent("gru"))
    with torch.no_grad():
        agent.actor.body.layers[1].weight[[0, 3]] = 0.0
        agent.actor.body.layers[1].bias[[0, 3]] = 0.0
    generator, replay_rng = agent.generator.get_state(), copy.deepcopy(agent.replay.rng.bit_generator.state)
    out = plasticity_metrics(agent, step=100)
    assert set(out) == set(plasticity_columns())
    layers = activations(agent, "actor", agent.actor, agent.replay.sample(8))
    assert out["plasticity/actor/dormant"] >= 2 / (4 + 8 + 8)  # the cell has 4 units, the body 8 + 8
    assert out["plasticity/actor/srank"] <= 6  # two of 8 features are zero
    assert all(v is not None and v >= 0 for v in out.values())
    assert torch.equal(agent.generator.get_state(), generator)
    assert plasticity_metrics(agent, step=100) == out  # same batch at the same step
    del layers, replay_rng


# ---------------------------------------------------------------------- learning speed
def test_learning_speed_reads_each_task_window_and_its_trend():
    steps = torch.arange(1, 13) * 10  # 3 tasks of 40 steps, 4 eval points each
    curve = torch.zeros(12, 3)
    curve[0:4, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0])
    curve[4:8, 1] = torch.tensor([0.0, 1.0, 1.0, 1.0])
    curve[8:12, 2] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    out = learning_speed(torch.stack([curve, curve * 0.5]), steps, 40, fraction=1 / 3, num_resamples=200)
    assert torch.allclose(out["auc"].value, torch.tensor([0.75, 0.5625, 0.1875]))
    assert out["trend"].value.item() == pytest.approx((0.1875 - 0.75) / 2)
    assert out["late_minus_early"].value.item() == pytest.approx(0.1875 - 0.75)
    assert out["auc"].lo[0] == pytest.approx(0.5) and out["auc"].hi[0] == pytest.approx(1.0)
    assert learning_speed_trend(torch.ones(2, 5)).tolist() == [0.0, 0.0]


# ---------------------------------------------------------------------- exact resume
ALL = [("cbp", {"maturity": 3, "rate": 0.05}), ("shrink-perturb", {"every": 7}), ("l2-init", {}),
       ("redo", {"every": 5}), ("reset-last", {"layers": 2}), ("cbp+ewc", {"cbp": {"maturity": 3, "rate": 0.05},
                                                                         "ewc": {"batches": 2, "batch_size": 8}})]


@pytest.mark.parametrize("name,kwargs,trunk,body",
                         [(n, k, "gru", "cw") for n, k in ALL] + [("cbp", ALL[0][1], "lstm", "cw"),
                                                                  ("cbp", ALL[0][1], "gru", "relu"),
                                                                  ("reset-last", ALL[4][1], "gru", "relu")],
                         ids=[f"{n}-gru" for n, _ in ALL] + ["cbp-lstm", "cbp-gru-relu", "reset-last-gru-relu"])
def test_a_checkpoint_resumes_exactly_with_every_method(name, kwargs, trunk, body, tmp_path):
    from agents.training.checkpoint import load_checkpoint, save_checkpoint

    def agent():
        return SAC(tiny_env(steps_per_task=60), tiny_config(trunk, body=body),
                   protection=make_protection(name, **copy.deepcopy(kwargs)), seed=0)

    first = agent()
    first.learn(64)  # into task 1
    while first._obs is not None:  # checkpoints are taken between episodes
        first.learn(1)
    rest = 120 - first.num_timesteps
    save_checkpoint(tmp_path / "checkpoint.pt", first)
    first.learn(rest)
    second = agent()
    load_checkpoint(tmp_path / "checkpoint.pt", second)
    second.learn(rest)
    for (n, a), b in zip(first.actor.named_parameters(), second.actor.parameters()):
        assert torch.equal(a, b), n
    for a, b in zip(first.critic.parameters(), second.critic.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------- long scenarios
def test_remapped_memory_changes_every_answer_at_every_task_and_checks_its_input():
    import gymnasium as gym

    from scenarios.factories import make_repeated_env, remapped_memory_tasks

    env = gym.make("contenv/RemappedMemory-v0", steps_per_task=10).unwrapped
    mappings = [spec.split("mapping='")[1][:4] for spec in env.task_names]
    assert len(mappings) == 50 and env.task_id == "hidden"
    assert all(all(a != b for a, b in zip(m, n)) for m, n in zip(mappings, mappings[1:]))
    assert remapped_memory_tasks(5, seed=3) == remapped_memory_tasks(5, seed=3) != remapped_memory_tasks(5, seed=4)
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 1"):
        remapped_memory_tasks(0)
    with pytest.raises(ValueError, match="copy and repeat-first"):
        remapped_memory_tasks(3, kind="tmaze")
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        make_repeated_env(repeats=0)
