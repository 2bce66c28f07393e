"""VCL (agents/protection/vcl.py): the KL to the previous posterior, the prior update,
sampling, LayerNorm freezing, state round trip, training on MLP and recurrent trunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.protection import make_protection
from agents.protection.vcl import VCL
from agents.sac import SAC
from tests.protection_helpers import fill, make_agent, tiny_config, tiny_env


def hand_kl(mu_q, logvar_q, mu_p, logvar_p):
    """Gaussian KL(q || p) entry by entry in plain Python floats, summed."""
    total = 0.0
    for mq, lq, mp, lp in zip(mu_q.flatten().tolist(), logvar_q.flatten().tolist(),
                              mu_p.flatten().tolist(), logvar_p.flatten().tolist()):
        vq, vp = math.exp(lq), math.exp(lp)
        total += 0.5 * (math.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0)
    return total


@pytest.mark.parametrize("trunk", ["mlp", "gru", "lstm"])
def test_kl_to_the_previous_posterior_matches_a_hand_computation(trunk):
    vcl = VCL(coefficient=0.5)
    agent = make_agent(trunk, protection=vcl)
    assert vcl.loss(agent, None) is None  # first task, CW's first_task_kl=False: no KL
    vcl.on_task_end(agent, 0)
    agent.current_task = 1
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the posterior away from the prior it just became
        for p in agent.actor.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
        for v in vcl.log_var.values():
            v.add_(torch.rand(v.shape, generator=generator))
    own = dict(agent.actor.named_parameters())
    shared = [n for n in vcl.log_var if not n.startswith(("mean.", "log_std."))]  # two tasks, two heads
    expected = sum(hand_kl(own[n], vcl.log_var[n], vcl.prior_mean[n], vcl.prior_log_var[n]) for n in shared)
    assert vcl.head_names == ["mean.weight", "mean.bias", "log_std.weight", "log_std.bias"]
    assert expected > 1.0
    assert vcl.loss(agent, None).item() == pytest.approx(0.5 * expected, rel=1e-5)


def test_first_task_kl_regularises_the_current_head_slice_towards_the_standard_normal():
    vcl = VCL(first_task_kl=True)
    agent = make_agent("mlp", protection=vcl)
    agent.current_task = 1
    own = dict(agent.actor.named_parameters())
    expected = 0.0
    for name, log_var in vcl.log_var.items():
        mean = own[name]
        if name in vcl.head_names:  # rows of task 1 only, prior N(0, 1)
            rows = mean.shape[0] // 2
            mean, log_var = mean[rows:], log_var[rows:]
        expected += hand_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(mean))
    assert vcl.loss(agent, None).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("trunk", ["mlp", pytest.param("gru", marks=pytest.mark.slow)])
def test_after_a_task_end_the_prior_is_the_learned_posterior(trunk):
    agent = SAC(tiny_env(), tiny_config(trunk), protection="vcl", seed=0)
    vcl = agent.protection
    start = {n: v.detach().clone() for n, v in vcl.log_var.items()}
    agent.learn(40)  # the first task, to its end
    assert vcl.tasks_ended == 1
    own = dict(agent.actor.named_parameters())
    learned = [n for n in vcl.log_var if not torch.equal(vcl.log_var[n], start[n])]
    assert learned  # the log-variances were trained
    for name in vcl.log_var:
        if name in vcl.head_names:
            assert torch.equal(vcl.prior_mean[name], torch.zeros_like(own[name]))  # heads keep N(0, 1)
            continue
        assert torch.equal(vcl.prior_mean[name], own[name].detach())
        assert torch.equal(vcl.prior_log_var[name], vcl.log_var[name].detach())
    assert vcl.prior_mean[name] is not own[name]  # a copy, not the live tensor
    before = {n: p.detach().clone() for n, p in agent.actor.named_parameters()}
    agent.learn(40)
    after = dict(agent.actor.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in before.items() if "norm" in n)
    assert not torch.equal(after["body.layers.0.weight"], before["body.layers.0.weight"])
    assert agent.pop_metrics()["train/protection_loss"] > 0  # the second task pays the KL


def test_weights_are_sampled_in_updates_and_acting_and_means_on_request():
    vcl = VCL()
    agent = make_agent("mlp", protection=vcl)
    obs = np.zeros(agent.spec.obs_dim, dtype=np.float32)
    first, _ = agent.predict(obs, deterministic=True)
    second, _ = agent.predict(obs, deterministic=True)
    assert not np.allclose(first, second)  # CW: a fresh weight sample per actor call, at test time too
    sample = vcl.task_parameters(agent, 0)
    own = dict(agent.actor.named_parameters())
    spread = (sample["body.layers.0.weight"] - own["body.layers.0.weight"]).std().item()
    assert spread == pytest.approx(math.exp(-3.0), rel=0.5)  # std = exp(log_var / 2) = exp(-3)
    assert sample["body.layers.0.weight"].requires_grad  # the reparametrised sample carries the gradient
    vcl.act_with = "mean"
    first, _ = agent.predict(obs, deterministic=True)
    second, _ = agent.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, second)


def test_log_variances_join_the_optimizer_and_train():
    agent = make_agent("mlp", protection="vcl")
    fill(agent, task=0)
    agent.current_task = 0
    ids = {id(p) for group in agent.optimizer.param_groups for p in group["params"]}
    assert all(id(v) in ids for v in agent.protection.log_var.values())
    before = agent.protection.log_var["body.layers.0.weight"].detach().clone()
    agent.gradient_step()
    assert not torch.equal(agent.protection.log_var["body.layers.0.weight"], before)


def test_state_round_trip_through_the_agent_file(tmp_path):
    agent = SAC(tiny_env(), tiny_config("mlp"), protection=make_protection("vcl", coefficient=2.0), seed=0)
    agent.learn(48)
    agent.save(tmp_path / "agent.pt")
    loaded = SAC.load(tmp_path / "agent.pt")
    assert loaded.protection.coefficient == 2.0 and loaded.protection.tasks_ended == 1
    for name, value in agent.protection.log_var.items():
        assert torch.equal(loaded.protection.log_var[name], value.detach())
        assert torch.equal(loaded.protection.prior_mean[name], agent.protection.prior_mean[name])
    ids = {id(p) for group in loaded.optimizer.param_groups for p in group["params"]}
    assert all(id(v) in ids for v in loaded.protection.log_var.values())  # copied into the optimizer's tensors
    assert loaded.protection.kl(loaded).item() == pytest.approx(agent.protection.kl(agent).item())


def test_bad_arguments_are_refused_and_vcl_does_not_stack_with_another_regulariser():
    with pytest.raises(ValueError, match="act_with"):
        VCL(act_with="median")
    with pytest.raises(ValueError, match="coefficient"):
        VCL(coefficient=-1.0)
    with pytest.raises(ValueError, match="importance regularisers"):
        make_protection("vcl+ewc")
