"""Hypernetwork protection through the real agent: old tasks' generated weights hold still
under the regulariser (on the generated weights, hypnettorch's calc_fix_target_reg) and drift
without it; generated critics; sizes, snapshot and checkpoints."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import pytest
import torch

import contenv  # noqa: F401  (registers the ids)
from agents.nets.networks import sub_params
from agents.protection import PROTECTIONS, make_protection, register_protection
from agents.protection.hnet import HyperNetwork, hypernetwork_size
from agents.sac import SAC, SACConfig, SpaceSpec

TASKS = ["repeat-first(d=2)", "copy(p=1,i=1)"]
STEPS = 100  # per task
SMALL = dict(embedding_dim=16, chunk_embedding_dim=16, hidden_sizes=(32, 32))


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.delitem(PROTECTIONS, "hnet", raising=False)  # undone after the test
    register_protection("hnet", "agents.protection.hnet:HyperNetwork")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: extra threads only fight over the shared cores
    yield
    torch.set_num_threads(threads)


def make_agent(trunk: str, **kwargs) -> SAC:
    env = gym.make("contenv/Sequence-v0", tasks=TASKS, steps_per_task=STEPS)
    config = SACConfig(trunk=trunk, hidden_sizes=(16, 16), rnn_size=8, batch_size=8, seq_len=4,
                       random_steps=20, update_after=20, update_every=20, gradient_steps=10)
    return SAC(env, config, protection=make_protection("hnet", **{**SMALL, **kwargs}), seed=0)


def raw_output(hnet: HyperNetwork, task: int) -> torch.Tensor:
    with torch.no_grad():
        return hnet.net(hnet.net.task_embeddings[task].detach()[None])[0].clone()


def generated_weights(hnet: HyperNetwork, task: int, net=None) -> dict[str, torch.Tensor]:
    """The weights ``base + scale * raw`` of ``task`` by hand from the targets (one head), with ``net``'s outputs."""
    net = net or hnet.net
    with torch.no_grad():
        raw = net(net.task_embeddings[task].detach()[None])[0]
    out, start = {}, 0
    for name, shape, base, scale, _ in hnet.targets:
        n = math.prod(shape)
        out[name] = base + scale * raw[start : start + n].view(shape)
        start += n
    return out


def flat(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for v in weights.values()])


def old_task_drift(trunk: str, beta: float) -> float:
    """Relative change of task 0's generated weights while task 1 trains."""
    agent = make_agent(trunk, beta=beta)
    hnet = agent.protection
    agent.learn(STEPS)
    before, embedding = raw_output(hnet, 0), hnet.net.task_embeddings[0].detach().clone()
    weights = flat(generated_weights(hnet, 0))
    agent.learn(STEPS)
    assert agent.current_task == 1 and hnet.snapshot_task == 1
    assert torch.equal(hnet.net.task_embeddings[0], embedding)  # old embeddings are frozen exactly
    assert torch.equal(hnet.snapshot_outputs()[0], before)  # the snapshot is theta at task 1's start
    return float((flat(generated_weights(hnet, 0)) - weights).norm() / weights.norm())


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_regulariser_keeps_old_generated_weights(trunk: str) -> None:
    held = old_task_drift(trunk, beta=100.0)
    free = old_task_drift(trunk, beta=0.0)
    assert held < 0.02, f"old weights moved {held:.3g} under the regulariser"
    assert free > 10 * held, f"without the regulariser they moved only {free:.3g} (with: {held:.3g})"


def test_actor_runs_on_generated_weights_and_loss_is_the_formula() -> None:
    agent = make_agent("gru", beta=0.7)
    hnet = agent.protection
    agent.learn(STEPS + 30)
    # The actor's own weights are not what acts: generated ones are, for every tensor.
    generated = hnet.task_parameters(agent, 1)
    assert sorted(generated) == sorted(name for name, _ in agent.actor.named_parameters())
    assert generated["cell.weight_hh"].requires_grad
    # loss = beta / T * sum_{t<T} ||W(e_t, theta*) - W(e_t, theta)||^2 on the generated weights
    # (hypnettorch's calc_fix_target_reg, beta outside), with T = 1 here.
    snapshot_net = copy.deepcopy(hnet.net)
    snapshot_net.load_state_dict({**hnet.net.state_dict(), **hnet.snapshot})
    now, then = generated_weights(hnet, 0), generated_weights(hnet, 0, snapshot_net)
    expected = 0.7 / 1 * sum((now[name] - then[name]).square().sum() for name in now)
    raw_drift = (raw_output(hnet, 0) - hnet.snapshot_outputs()[0]).square().sum()
    assert torch.allclose(hnet.loss(agent, None), expected, rtol=1e-4) and float(expected) > 0
    assert not torch.allclose(expected, 0.7 * raw_drift, rtol=1e-2)  # not the raw outputs (the old penalty)
    # Only theta and the current embedding get gradients.
    agent.optimizer.zero_grad(set_to_none=True)
    loss, _ = agent.compute_loss(agent.replay.sample(8))
    loss.backward()
    assert hnet.net.task_embeddings[0].grad is None and hnet.net.task_embeddings[1].grad is not None
    assert hnet.net.output.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in agent.actor.parameters())


def test_compression_ratio() -> None:
    cw10 = SpaceSpec(obs_dim=49, task_width=39, num_tasks=10, action_dim=4, onehot=True)
    agent = SAC(spec=cw10, config=SACConfig(), protection=HyperNetwork(), seed=0)
    hnet = agent.protection
    # The CW MLP actor with one head: 39 -> 256 (+LayerNorm) -> 256 -> 256 -> 256 -> mean, log_std.
    one_head = (39 * 256 + 256) + 2 * 256 + 3 * (256 * 256 + 256) + 2 * (256 * 4 + 4)
    assert hnet.target_size == one_head == 210184
    counted = sum(p.numel() for p in hnet.net.parameters())
    assert hnet.hypernetwork_size == counted
    assert hnet.compression_ratio == counted / one_head
    # The chosen chunk is the largest within the 0.95 target.
    assert hnet.compression_ratio <= 0.95
    size = lambda chunk: hypernetwork_size(one_head, chunk, 10, 32, 32, (64, 64))  # noqa: E731
    assert size(hnet.chunk_size + 1) > 0.95 * one_head
    assert hnet.num_chunks == math.ceil(one_head / hnet.chunk_size)
    # A fixed chunk size is taken as given.
    fixed = SAC(spec=cw10, config=SACConfig(), protection=HyperNetwork(chunk_size=1000), seed=0).protection
    assert fixed.chunk_size == 1000 and fixed.hypernetwork_size == size(1000)


def test_checkpoint_round_trip(tmp_path) -> None:
    agent = make_agent("gru", beta=0.3)
    agent.learn(STEPS + 30)
    agent.save(tmp_path / "agent.pt")
    loaded = SAC.load(tmp_path / "agent.pt")  # rebuilds the protection from its defaults first
    hnet, back = agent.protection, loaded.protection
    assert back.config == hnet.config and back.snapshot_task == 1
    for name, value in hnet.net.state_dict().items():  # embeddings, chunk embeddings, MLP
        assert torch.equal(back.net.state_dict()[name], value)
    assert all(torch.equal(back.snapshot[k], v) for k, v in hnet.snapshot.items())
    assert torch.equal(back.snapshot_outputs(), hnet.snapshot_outputs())
    for task in (0, 1):
        mine, theirs = hnet.task_parameters(agent, task), back.task_parameters(loaded, task)
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(back.loss(loaded, None), hnet.loss(agent, None))


def test_generated_critics_train_and_the_targets_follow_them() -> None:
    agent = make_agent("gru", generate_critic=True)
    hnet = agent.protection
    own = {name: p.detach().clone() for name, p in agent.critic.named_parameters()}
    critic = hnet.critic_parameters(agent, 0)
    assert sorted(critic) == sorted(own)  # every critic weight, both critics, all heads
    assert hnet.target_size > sum(p.numel() for p in agent.critic.parameters())  # one head of actor + critics
    assert sub_params(critic, "q1")["head.weight"].requires_grad
    agent.learn(STEPS // 2)  # a few rounds of updates on task 0
    updates = agent.num_updates
    assert updates > 0
    first = {name: value.detach().clone() for name, value in hnet.critic_parameters(agent, 0).items()}
    agent.learn(STEPS // 2 + 30)  # more updates; the last 30 steps on task 1
    assert agent.num_updates > updates and agent.current_task == 1
    # The critics' own weights are unused (no gradient, never stepped); the generated ones trained.
    assert all(torch.equal(p, own[name]) for name, p in agent.critic.named_parameters())
    now = hnet.critic_parameters(agent, 0)
    assert max(float((now[name] - first[name]).detach().abs().max()) for name in now) > 1e-4
    # The target critics track the generated weights (polyak 0.995), not the unused own ones.
    generated = hnet.critic_parameters(agent, agent.current_task)
    target = dict(agent.target_critic.named_parameters())
    gap_generated = sum(float((target[n] - generated[n].detach()).square().sum()) for n in target)
    gap_own = sum(float((target[n] - own[n]).square().sum()) for n in target)
    assert gap_generated < gap_own
    # The regulariser covers the generated critic weights too.
    assert len(hnet.weight_scales()) == hnet.target_size
    # The SAC losses reach theta through the generated critic, never the critics' own weights.
    agent.optimizer.zero_grad(set_to_none=True)
    loss, _ = agent.compute_loss(agent.replay.sample(8), include_protection=False)
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert float(hnet.net.output.weight.grad.abs().sum()) > 0
    hnet_off = HyperNetwork(**SMALL)
    assert hnet_off.critic_parameters(agent, 0) is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="beta"):
        HyperNetwork(beta=-1)
    with pytest.raises(ValueError, match="embedding_init"):
        HyperNetwork(embedding_init="zeros")
