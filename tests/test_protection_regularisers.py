"""Mechanism tests of the weight regularisers: L2, EWC, online EWC, MAS (issue 6).

Each test would fail for a stub: the Fisher is checked against the closed form (analytic
on the output heads, an explicit per-state autograd loop elsewhere, and the recurrent
Monte Carlo estimate against its expectation); penalties are checked for value, growth
and gradient; online EWC's decay is counted per task through a real training run.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from protection_helpers import (  # noqa: F401  (the fixture registers the methods for this module)
    SMALL,
    fill,
    make_agent,
    registered_protections,
    tiny_config,
    tiny_env,
)

from agents.nets.networks import Actor, NetworkConfig
from agents.protection import make_protection
from agents.protection.common import HEAD_PREFIXES, actor_inputs, batch_to_rows, run_actor, shared_actor_names
from agents.protection.ewc import EWC, OnlineEWC, empirical_sequence_fisher, gaussian_fisher, sampled_sequence_fisher
from agents.protection.l2 import L2
from agents.protection.mas import MAS, output_sensitivity
from agents.sac import SAC

EPS, CLIP = 1e-6, 1e-5  # CW's stabiliser and Fisher clip


def mlp_rows(batch=6, input_dim=3, num_heads=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(batch, 1, input_dim, generator=generator),
            "task": torch.randint(num_heads, (batch, 1), generator=generator),
            "mask": torch.ones(batch, 1)}


# ---------------------------------------------------------------------- the Fisher
@pytest.mark.parametrize("quantity", ["tanh_mean", "pre_tanh_mean"])
def test_fisher_of_output_heads_equals_the_analytic_closed_form(quantity):
    """mu = W x + b and log sigma = V x + c: (d m_a/d W_aj)^2 / sigma^2 = g_a^2 x_j^2 / sigma_a^2 and
    2 (d sigma_a / d V_aj)^2 / sigma_a^2 = 2 x_j^2, known without autograd; g_a = 1 - tanh(mu_a)^2
    for CW's squashed mean m = tanh(mu) (its actor returns that tensor), 1 for the pre-tanh mean."""
    torch.manual_seed(0)
    actor = Actor(NetworkConfig(input_dim=3, action_dim=2, num_heads=1, hidden_sizes=(5,)))
    with torch.no_grad():
        actor.log_std.weight.mul_(0.5)  # keep log sigma well inside the clamp [-20, 2]
        actor.mean.weight.mul_(4.0)  # means of several units: saturated dimensions, where the forms differ
    inputs = mlp_rows(batch=7)
    names = [name for name, _ in actor.named_parameters()]
    fisher = gaussian_fisher(actor, names, inputs, quantity=quantity)

    params = dict(actor.named_parameters())
    with torch.no_grad():
        x = actor.body.run(params, "body.", inputs["obs"])[:, 0]  # [B, H] features the heads read
        sigma2 = (x @ actor.log_std.weight.T + actor.log_std.bias).exp().square()  # [B, A]
        mu = x @ actor.mean.weight.T + actor.mean.bias  # [B, A]
    assert float(mu.abs().max()) > 2.0  # some saturation, or the test could not tell the forms apart
    g2 = (1.0 - torch.tanh(mu).square()).square() if quantity == "tanh_mean" else torch.ones_like(mu)
    x2 = x.square()[:, None, :]  # [B, 1, H]
    var = (sigma2 + EPS)[:, :, None]  # [B, A, 1]
    expected = {
        "mean.weight": (g2[:, :, None] * x2 / var).clamp(min=CLIP).mean(0),
        "mean.bias": (g2 / (sigma2 + EPS)).clamp(min=CLIP).mean(0),
        "log_std.weight": (2.0 * sigma2[:, :, None] * x2 / var).clamp(min=CLIP).mean(0),
        "log_std.bias": (2.0 * sigma2 / (sigma2 + EPS)).clamp(min=CLIP).mean(0),
    }
    for name, value in expected.items():
        torch.testing.assert_close(fisher[name], value, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("num_heads,quantity", [(1, "tanh_mean"), (2, "tanh_mean"), (2, "pre_tanh_mean")])
def test_fisher_of_every_weight_matches_a_per_state_autograd_loop(num_heads, quantity):
    """CW's EWC_SAC by hand: per state, sum over action dims of ((d m_a)^2 + 2 (d sigma_a)^2) /
    (sigma_a^2 + 1e-6), clipped at 1e-5, then averaged over states."""
    torch.manual_seed(1)
    actor = Actor(NetworkConfig(input_dim=3, action_dim=2, num_heads=num_heads, hidden_sizes=(6, 5)))
    with torch.no_grad():
        actor.mean.weight.mul_(5.0)
    inputs = mlp_rows(batch=5, num_heads=num_heads)
    params = dict(actor.named_parameters())
    names = [n for n in params if not (num_heads > 1 and n.startswith(HEAD_PREFIXES))]
    fisher = gaussian_fisher(actor, names, inputs, chunk_size=2, quantity=quantity)

    expected = {n: torch.zeros_like(params[n]) for n in names}
    for b in range(5):
        row = {k: v[b : b + 1] for k, v in inputs.items()}
        mean, log_std = run_actor(actor, row)
        mean = torch.tanh(mean) if quantity == "tanh_mean" else mean
        sigma = log_std.exp()
        per_state = {n: torch.zeros_like(params[n]) for n in names}
        for a in range(2):
            var = sigma[0, 0, a].detach() ** 2 + EPS
            wrt = [params[n] for n in names]
            d_mu = torch.autograd.grad(mean[0, 0, a], wrt, retain_graph=True, allow_unused=True)
            d_sigma = torch.autograd.grad(sigma[0, 0, a], wrt, retain_graph=True, allow_unused=True)
            for n, gm, gs in zip(names, d_mu, d_sigma):
                gm = torch.zeros_like(params[n]) if gm is None else gm
                gs = torch.zeros_like(params[n]) if gs is None else gs
                per_state[n] += (gm.square() + 2.0 * gs.square()) / var
        for n in names:
            expected[n] += per_state[n].clamp(min=CLIP) / 5
    for n in names:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-8)


def test_recurrent_sampled_fisher_is_unbiased_for_the_closed_form():
    """E over sampled actions of (sum_t score_t)^2 / steps = closed form averaged over steps."""
    torch.manual_seed(2)
    actor = Actor(NetworkConfig(input_dim=2, action_dim=2, num_heads=2, trunk="gru", hidden_sizes=(5,), rnn_size=3))
    generator = torch.Generator().manual_seed(3)
    rows, steps = 3, 4
    base = {"obs": torch.randn(rows, steps, 2, generator=generator),
            "prev_action": torch.rand(rows, steps, 2, generator=generator) * 2 - 1,
            "prev_reward": torch.zeros(rows, steps),
            "task": torch.tensor([[0] * 4, [1] * 4, [1] * 4]),
            "mask": torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1]])}  # padding and burn-in
    names = shared = [n for n, _ in actor.named_parameters() if not n.startswith(HEAD_PREFIXES)]
    exact = gaussian_fisher(actor, names, base, clip=0.0)
    draws = 10_000
    repeated = {k: v.repeat_interleave(draws, dim=0) for k, v in base.items()}
    noise = torch.randn(rows * draws, steps, 2, generator=generator)
    sampled = sampled_sequence_fisher(actor, shared, repeated, noise, clip=0.0, chunk_size=2000)
    flat_exact = torch.cat([exact[n].flatten() for n in names])
    flat_sampled = torch.cat([sampled[n].flatten() for n in names])
    for n in names:  # each tensor's total within 5% (about 4.5 standard errors at 10,000 draws)
        torch.testing.assert_close(sampled[n].sum(), exact[n].sum(), rtol=0.05, atol=1e-6)
    assert torch.nn.functional.cosine_similarity(flat_exact, flat_sampled, dim=0) > 0.99


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_ewc_consolidates_the_finished_task_and_skips_the_last(trunk):
    agent = make_agent(trunk)
    fill(agent, task=0)
    ewc = EWC(**SMALL)
    ewc.on_task_end(agent, 0)
    assert sorted(ewc.importance) == sorted(shared_actor_names(agent))
    assert not any(name.startswith(HEAD_PREFIXES) for name in ewc.importance)  # one head per task: heads free
    assert all(bool((f >= CLIP).all()) and bool(torch.isfinite(f).all()) for f in ewc.importance.values())
    assert max(float(f.max()) for f in ewc.importance.values()) > 10 * CLIP  # not just the clip
    weights = dict(agent.actor.named_parameters())
    assert all(torch.equal(anchor, weights[n]) for n, anchor in ewc.anchor.items())
    before = {n: f.clone() for n, f in ewc.importance.items()}
    ewc.on_task_end(agent, 1)  # the last task: nothing to protect it from
    assert ewc.consolidated == [0] and all(torch.equal(before[n], ewc.importance[n]) for n in before)


# ---------------------------------------------------------------------- penalties
REGULARISERS = [("l2", {}), ("ewc", SMALL), ("online-ewc", SMALL), ("mas", SMALL)]


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
@pytest.mark.parametrize("name,kwargs", REGULARISERS)
def test_penalty_is_zero_at_the_anchor_grows_quadratically_and_pulls_back(name, kwargs, trunk):
    agent = make_agent(trunk)
    fill(agent, task=0)
    method = make_protection(name, **kwargs)
    assert method.loss(agent, None) is None  # nothing consolidated yet
    method.on_task_end(agent, 0)
    assert method.loss(agent, None).item() == 0.0

    weights = dict(agent.actor.named_parameters())
    generator = torch.Generator().manual_seed(4)
    direction = {n: torch.randn(weights[n].shape, generator=generator) * 1e-3 for n in method.anchor}
    with torch.no_grad():
        for n, d in direction.items():
            weights[n].add_(d)
    small = method.loss(agent, None)
    with torch.no_grad():
        for n, d in direction.items():
            weights[n].add_(d)
    large = method.loss(agent, None)
    assert small.item() > 0
    torch.testing.assert_close(large, 4 * small, rtol=1e-3, atol=0.0)  # quadratic in the move

    agent.actor.zero_grad()
    large.backward()
    for n, anchor in method.anchor.items():  # gradient 2 c w (theta - theta*): straight back to the anchor
        expected = 2 * method.coefficient * method.importance[n] * (weights[n].detach() - anchor)
        torch.testing.assert_close(weights[n].grad, expected, rtol=1e-4, atol=1e-6)
    step = 0.1 / (2 * method.coefficient * max(float(w.max()) for w in method.importance.values()))
    with torch.no_grad():
        for n in method.anchor:
            weights[n].sub_(step * weights[n].grad)
    assert method.loss(agent, None).item() < large.item()

    before = method.loss(agent, None).item()
    with torch.no_grad():  # the per-task heads are not regularised (CW's common variables)
        agent.actor.mean.weight.add_(1.0)
    assert method.loss(agent, None).item() == before and "mean.weight" not in method.anchor


def test_l2_sums_one_importance_per_finished_task_like_continual_world():
    agent = make_agent(num_tasks=3)
    l2 = L2()
    l2.on_task_end(agent, 0)
    l2.on_task_end(agent, 1)
    assert all(bool((w == 2.0).all()) for w in l2.importance.values())
    assert l2.coefficient == 1e5 and EWC().coefficient == 1e4 and MAS().coefficient == 1e4


def test_online_ewc_is_gamma_times_old_plus_new_on_the_real_fisher():
    """Same seeds, same replay rows: online EWC's Fisher after two tasks is gamma F0 + F1,
    where EWC's (summed) Fisher gives F0 and F0 + F1."""
    results = {}
    for method in (EWC(**SMALL), OnlineEWC(gamma=0.5, **SMALL)):
        agent = make_agent(num_tasks=3)
        fill(agent, task=0)
        method.on_task_end(agent, 0)
        first = {n: f.clone() for n, f in method.importance.items()}
        agent.replay.clear()
        fill(agent, task=1)
        method.on_task_end(agent, 1)
        results[method.name] = first, method.importance
    f0, summed = results["ewc"]
    online_first, online = results["online-ewc"]
    for n in f0:
        torch.testing.assert_close(online_first[n], f0[n])
        torch.testing.assert_close(online[n], 0.5 * f0[n] + (summed[n] - f0[n]), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("cls,expected", [(OnlineEWC, 0.9 * 1.0 + 2.0), (EWC, 1.0 + 2.0)])
def test_online_ewc_decays_once_per_task_never_per_training_step(monkeypatch, cls, expected):
    """Task t's Fisher is a constant t + 1; with a decay per update the importance would
    shrink with every one of the run's updates instead."""
    monkeypatch.setattr(cls, "task_importance", lambda self, agent, task: {
        n: torch.full_like(p, task + 1.0) for n, p in agent.actor.named_parameters() if n in shared_actor_names(agent)})
    env = tiny_env(("repeat-first(d=2)", "copy(p=1,i=1)", "repeat-first(d=2)"), steps_per_task=24)
    method = cls()
    agent = SAC(env, tiny_config("mlp"), protection=method, seed=0)
    seen = []
    agent.learn(72, callback=lambda a: seen.append(
        (a.num_updates, None if not method.importance else float(next(iter(method.importance.values())).flatten()[0]))))
    assert method.consolidated == [0, 1]
    values = [v for _, v in seen]
    assert sorted(set(v for v in values if v is not None)) == [1.0, pytest.approx(expected)]
    # the value is constant while a task trains, across many updates
    updates_at_final = [u for u, v in seen if v == pytest.approx(expected)]
    assert updates_at_final[-1] - updates_at_final[0] >= 4
    assert all(bool(torch.allclose(w, torch.full_like(w, expected))) for w in method.importance.values())


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("trunk", ["mlp", "gru"])
@pytest.mark.parametrize("name,kwargs", REGULARISERS)
def test_state_dict_round_trip_restores_every_setting_and_tensor(name, kwargs, trunk, tmp_path):
    agent = make_agent(trunk, protection=make_protection(name, coefficient=123.0, **kwargs))
    fill(agent, task=0)
    agent.protection.on_task_end(agent, 0)
    with torch.no_grad():
        for p in agent.actor.parameters():
            p.add_(1e-2)
    buffer = io.BytesIO()
    torch.save(agent.protection.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_protection(name)  # defaults, as SAC.load builds it
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    assert fresh.coefficient == 123.0 and fresh.consolidated == [0]
    assert all(torch.equal(fresh.importance[n], agent.protection.importance[n]) for n in fresh.importance)
    assert fresh.loss(agent, None).item() == agent.protection.loss(agent, None).item() > 0

    agent.save(tmp_path / "agent.pt")  # through the agent's own file
    loaded = SAC.load(tmp_path / "agent.pt")
    assert loaded.protection.loss(loaded, None).item() == agent.protection.loss(agent, None).item()


# ---------------------------------------------------------------------- end to end
@pytest.mark.parametrize("trunk", ["mlp", "gru"])
@pytest.mark.parametrize("name,kwargs", REGULARISERS)
def test_training_with_each_regulariser_runs_end_to_end(name, kwargs, trunk):
    agent = SAC(tiny_env(), tiny_config(trunk), protection=make_protection(name, **kwargs), seed=0)
    agent.learn(80)
    method = agent.protection
    assert agent.current_task == 1 and method.consolidated == [0]
    metrics = agent.pop_metrics()
    assert metrics["train/protection_loss"] > 0  # the second task moved the weights and paid for it
    assert all(np.isfinite(v) for v in metrics.values())
    weights = dict(agent.actor.named_parameters())
    assert any(not torch.equal(weights[n], a) for n, a in method.anchor.items())


def test_batch_rows_feed_the_actor_like_the_sac_update():
    """The rows the regularisers read give the actor exactly what compute_loss gives it."""
    agent = make_agent("gru")
    fill(agent, task=0)
    batch = agent.replay.sample(5)
    mean, log_std = run_actor(agent.actor, actor_inputs(agent, batch_to_rows(batch)))
    full, full_log_std, _ = agent.actor(agent.net_obs(batch.obs), batch.prev_action, batch.prev_reward,
                                        torch.cat([batch.task, batch.task[:, -1:]], 1))
    torch.testing.assert_close(mean, full[:, : batch.steps])
    torch.testing.assert_close(log_std, full_log_std[:, : batch.steps])


# ---------------------------------------------------------------------- issue 11: CW's quantity, Ehret's Fisher
def _saturated_actor(num_heads=1, trunk="mlp", seed=4):
    torch.manual_seed(seed)
    actor = Actor(NetworkConfig(input_dim=3, action_dim=2, num_heads=num_heads, hidden_sizes=(6, 5), trunk=trunk,
                                rnn_size=3))
    with torch.no_grad():
        actor.mean.weight.mul_(5.0)  # saturated means: tanh'(mu) far from 1
    return actor


@pytest.mark.parametrize("quantity", ["tanh_mean", "pre_tanh_mean"])
def test_mas_importance_matches_continual_worlds_formula_by_hand(quantity):
    """CW's MAS_SAC: per state |d (sum_a tanh(mu_a)^2 + sum_a log_std_a^2) / d theta|, averaged over states."""
    actor = _saturated_actor(num_heads=2)
    inputs = mlp_rows(batch=5, num_heads=2)
    params = dict(actor.named_parameters())
    names = [n for n in params if not n.startswith(HEAD_PREFIXES)]
    importance = output_sensitivity(actor, names, inputs, chunk_size=2, quantity=quantity)
    expected = {n: torch.zeros_like(params[n]) for n in names}
    for b in range(5):
        mean, log_std = run_actor(actor, {k: v[b : b + 1] for k, v in inputs.items()})
        m = torch.tanh(mean) if quantity == "tanh_mean" else mean
        grads = torch.autograd.grad(m.square().sum() + log_std.square().sum(), [params[n] for n in names])
        for n, g in zip(names, grads):
            expected[n] += g.abs() / 5
    for n in names:
        torch.testing.assert_close(importance[n], expected[n], rtol=1e-4, atol=1e-8)


def test_continual_worlds_form_is_the_default_and_differs_from_the_pre_tanh_form():
    agent = make_agent()
    with torch.no_grad():
        agent.actor.mean.weight.mul_(20.0)
    fill(agent, task=0)
    defaults = {"ewc": EWC(**SMALL), "mas": MAS(**SMALL)}
    invariant = {"ewc": EWC(**SMALL, quantity="pre_tanh_mean"), "mas": MAS(**SMALL, quantity="pre_tanh_mean")}
    for name in defaults:
        assert defaults[name].quantity == "tanh_mean"
        agent.generator.manual_seed(0)
        cw = defaults[name].task_importance(agent, 0)
        agent.generator.manual_seed(0)
        pre = invariant[name].task_importance(agent, 0)
        ratio = cw["body.layers.0.weight"].sum() / pre["body.layers.0.weight"].sum()
        assert ratio < 0.9, (name, float(ratio))  # saturated means weigh less in CW's form
    with pytest.raises(ValueError, match="tanh_mean"):
        EWC(quantity="tanh")
    with pytest.raises(ValueError, match="empirical"):
        EWC(fisher="fisher")


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_empirical_fisher_is_the_squared_sequence_score_of_replayed_actions(trunk):
    """hypnettorch compute_fisher(empirical_fisher=True, time_series=True): per sequence, the squared gradient of
    sum_t log pi(a_t | h_t) at the replayed actions; averaged over sequences; no division by length, no clip."""
    actor = _saturated_actor(num_heads=2, trunk=trunk)
    generator = torch.Generator().manual_seed(5)
    rows, steps = 4, 3 if trunk == "gru" else 1
    inputs = {"obs": torch.randn(rows, steps, 3, generator=generator), "task": torch.randint(2, (rows, steps)),
              "mask": torch.ones(rows, steps)}
    if trunk == "gru":
        inputs["prev_action"] = torch.rand(rows, steps, 2, generator=generator) * 2 - 1
        inputs["prev_reward"] = torch.zeros(rows, steps)
        inputs["mask"][1, 0] = 0.0  # a burn-in step does not count
    actions = torch.rand(rows, steps, 2, generator=generator) * 1.8 - 0.9
    params = dict(actor.named_parameters())
    names = [n for n in params if not n.startswith(HEAD_PREFIXES)]
    fisher = empirical_sequence_fisher(actor, names, inputs, actions, chunk_size=3)
    expected = {n: torch.zeros_like(params[n]) for n in names}
    for b in range(rows):
        mean, log_std = run_actor(actor, {k: v[b : b + 1] for k, v in inputs.items()})
        squashed = torch.distributions.TransformedDistribution(
            torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
        log_likelihood = (squashed.log_prob(actions[b : b + 1]).sum(-1) * inputs["mask"][b : b + 1]).sum()
        for n, g in zip(names, torch.autograd.grad(log_likelihood, [params[n] for n in names])):
            expected[n] += g.square() / rows
    for n in names:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-3, atol=1e-7)


def test_ewc_with_the_empirical_fisher_consolidates():
    agent = make_agent("gru")
    fill(agent, task=0)
    ewc = EWC(**SMALL, fisher="empirical")
    ewc.on_task_end(agent, 0)
    assert ewc.consolidated == [0] and min(float(v.min()) for v in ewc.importance.values()) >= 0.0
    assert max(float(v.max()) for v in ewc.importance.values()) > 0.0
