"""Mechanism tests of the memory methods: A-GEM, perfect-memory replay, behavioural cloning,
and of combining methods (issue 6)."""

from __future__ import annotations

import copy
import io
import pickle

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

from agents.protection import make_protection
from agents.protection.agem import AGEM, project
from agents.protection.common import rows_to_batch, run_actor, sample_rows
from agents.protection.compose import Composite, check_combination
from agents.protection.replay import Replay, gaussian_kl
from agents.replay import SequenceReplay, TransitionReplay
from agents.sac import SAC, Callback


def nudge(agent, scale=0.05, seed=0):
    """Move the actor's first layer at random (a constant shift would vanish in its LayerNorm)."""
    weight = agent.actor.body.layers[0].weight
    with torch.no_grad():
        weight.add_(scale * torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed)))


def flat_grad(params):
    return torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten() for p in params])


# ---------------------------------------------------------------------- A-GEM
def test_projection_never_opposes_the_reference_and_leaves_agreeing_gradients_alone():
    generator = torch.Generator().manual_seed(0)
    conflicts = 0
    for _ in range(500):
        g, ref = torch.randn(40, generator=generator), torch.randn(40, generator=generator)
        out = project(g, ref)
        assert torch.dot(out, ref) >= -1e-5 * g.norm() * ref.norm()
        if torch.dot(g, ref) >= 0:
            assert torch.equal(out, g)
        else:
            conflicts += 1
            assert abs(float(torch.dot(out, ref))) < 1e-4  # onto the boundary of the half-space...
            change = out - g  # ...by the shortest move: along ref
            assert abs(float(torch.nn.functional.cosine_similarity(change, ref, dim=0))) > 1 - 1e-5
    assert 150 < conflicts < 350


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_agem_projects_the_joint_actor_critic_gradient_against_the_memory(trunk):
    agent = make_agent(trunk)
    fill(agent, task=0)
    agem = AGEM(memory_per_task=60, episodic_batch_size=16)
    agem.on_task_end(agent, 0)
    expected_rows = 60 if trunk == "mlp" else 20  # sub-sequences of seq_len=3: about 60 steps
    assert agem.memory["action"].shape[0] == expected_rows and agem.memory_tasks == [0]
    agent.current_task = 1
    params = [*agent.actor.parameters(), *agent.critic.parameters()]

    def reference(state):
        agent.generator.set_state(state)
        batch = rows_to_batch(sample_rows(agem.memory, agem.episodic_batch_size, agent.generator))
        loss, _ = agent.compute_loss(batch, include_protection=False)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    state = agent.generator.get_state()
    ref = reference(state)
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)) * 0.1 * ref.norm() / ref.numel() ** 0.5
    for sign, violated in ((-1.0, 1), (1.0, 0)):  # opposing the memory, then agreeing with it
        proposed = sign * ref + noise
        offset = 0
        for p in params:
            p.grad = proposed[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        agent.log_alpha.grad = torch.ones_like(agent.log_alpha)
        before = int(agem.violations)
        agent.generator.set_state(state)
        agem.after_backward(agent)
        after = flat_grad(params)
        assert int(agem.violations) - before == violated
        assert torch.dot(after, ref) >= -1e-4 * after.norm() * ref.norm()
        if violated:
            assert abs(float(torch.dot(after, ref))) <= 1e-4 * float(after.norm() * ref.norm())
        else:
            torch.testing.assert_close(after, proposed)
        assert torch.equal(agent.log_alpha.grad, torch.ones_like(agent.log_alpha))  # entropy coefficients untouched


# ---------------------------------------------------------------------- perfect memory
def chi_square_critical(dof: int, z: float = 3.09) -> float:
    """Wilson-Hilferty upper quantile of chi-square (z = 3.09: p = 0.001)."""
    return dof * (1 - 2 / (9 * dof) + z * (2 / (9 * dof)) ** 0.5) ** 3


def test_reservoir_keeps_every_offered_step_with_equal_probability():
    capacity, offered, trials = 10, 60, 1000
    counts = np.zeros(offered)
    for trial in range(trials):
        replay = TransitionReplay(capacity, obs_dim=1, action_dim=1, mode="reservoir", seed=trial)
        for t in range(offered):
            replay.add(np.array([t]), np.zeros(1), float(t), np.array([t]), False, False, task=0)
        counts[replay.reward[: len(replay)].astype(int)] += 1
    expected = trials * capacity / offered
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < chi_square_critical(offered - 1), (chi_square, counts)
    assert counts[:10].sum() == pytest.approx(counts[-10:].sum(), rel=0.15)  # first steps as likely as the last


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_perfect_memory_sets_up_the_agents_replay_and_keeps_every_task(trunk):
    env = tiny_env()
    agent = SAC(env, tiny_config(trunk), protection=Replay(batch_size=32), seed=0)
    total = env.unwrapped.total_steps
    kind, mode = (SequenceReplay, "fifo") if trunk == "gru" else (TransitionReplay, "reservoir")
    assert isinstance(agent.replay, kind) and agent.replay.mode == mode and agent.replay.capacity == total
    assert agent.config.batch_size == 32 and not agent.config.reset_replay_on_task_change
    assert SAC(tiny_env(), tiny_config(trunk), protection=Replay(), seed=0).config.batch_size == 512  # CW default
    agent.learn(total)
    assert len(agent.replay) == total  # nothing dropped, nothing cleared at the task change
    assert set(agent.replay.task[: len(agent.replay)].tolist()) == {0, 1}
    assert agent.pop_metrics()["train/protection_loss"] == 0.0  # no extra loss: it only replays

    resumed = SAC(tiny_env(), tiny_config(trunk), protection=Replay(batch_size=32), seed=0)
    resumed.load_training_state(agent.training_state())  # the replay state fits the rebuilt replay
    assert len(resumed.replay) == total


# ---------------------------------------------------------------------- behavioural cloning
def test_gaussian_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    m0, s0, m1, s1 = (torch.randn(5, 3, generator=generator) for _ in range(4))
    old, new = torch.distributions.Normal(m0, s0.exp()), torch.distributions.Normal(m1, s1.exp())
    torch.testing.assert_close(gaussian_kl(m0, s0, m1, s1), torch.distributions.kl_divergence(old, new).sum(-1))


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_cloning_kl_is_zero_for_the_old_policy_positive_after_change_and_pulls_back(trunk):
    agent = make_agent(trunk)
    fill(agent, task=0)
    bc = Replay(mode="bc", memory_per_task=60, batch_size=16)
    bc.on_task_end(agent, 0)
    memory = bc.memory
    mean, log_std = run_actor(agent.actor, memory)
    assert torch.equal(memory["old_mean"], mean.detach()) and torch.equal(memory["old_log_std"], log_std.detach())
    assert bool((memory["task"] == 0).all())  # task 0's head: its outputs are what is stored
    agent.current_task = 1
    assert abs(bc.loss(agent, None).item()) < 1e-5  # float rounding only: a batch of 16 (other padding) vs the stored 60

    with torch.no_grad():  # the new task's head is free to change: cloning looks at task 0's head only
        agent.actor.mean.weight[2:].add_(1.0)
    assert abs(bc.cloning_loss(agent, memory).item()) < 1e-6
    nudge(agent)
    moved = bc.cloning_loss(agent, memory)
    assert moved.item() > 1e-3
    agent.actor.zero_grad()
    moved.backward()
    with torch.no_grad():
        for p in agent.actor.parameters():
            if p.grad is not None:
                p.sub_(1e-4 * p.grad / max(float(p.grad.abs().max()), 1e-12))
    assert bc.cloning_loss(agent, memory).item() < moved.item()


def test_cloning_averages_the_actor_gradient_and_leaves_the_critic_alone():
    agent = make_agent()
    bc = Replay(mode="bc", memory_per_task=20)
    for p in [*agent.actor.parameters(), *agent.critic.parameters()]:
        p.grad = torch.ones_like(p)
    bc.after_backward(agent)  # empty memory: no cloning, nothing to average
    assert all(bool((p.grad == 1).all()) for p in agent.actor.parameters())
    fill(agent, task=0)
    bc.on_task_end(agent, 0)
    bc.after_backward(agent)
    assert all(bool((p.grad == 0.5).all()) for p in agent.actor.parameters())
    assert all(bool((p.grad == 1).all()) for p in agent.critic.parameters())


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("trunk", ["mlp", "gru"])
@pytest.mark.parametrize("name,kwargs", [("agem", {"memory_per_task": 30}),
                                         ("replay", {"mode": "bc", "memory_per_task": 30, "coefficient": 7.0})])
def test_memories_survive_a_state_dict_round_trip(name, kwargs, trunk, tmp_path):
    agent = make_agent(trunk, protection=make_protection(name, **kwargs))
    fill(agent, task=0)
    agent.protection.on_task_end(agent, 0)
    buffer = io.BytesIO()
    torch.save(agent.protection.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_protection(name)
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    assert fresh.memory.keys() == agent.protection.memory.keys()
    assert all(torch.equal(fresh.memory[k], v) for k, v in agent.protection.memory.items())
    assert fresh.memory_per_task == 30 and fresh.memory_tasks == [0]
    if name == "replay":
        assert fresh.coefficient == 7.0 and fresh.mode == "bc"
        nudge(agent)
        state = agent.generator.get_state()
        original = agent.protection.loss(agent, None)
        agent.generator.set_state(state)
        assert fresh.loss(agent, None).item() == original.item() > 0
    agent.save(tmp_path / "agent.pt")
    loaded = SAC.load(tmp_path / "agent.pt")
    assert all(torch.equal(loaded.protection.memory[k], v) for k, v in agent.protection.memory.items())


# ---------------------------------------------------------------------- combinations
def test_check_combination_accepts_sensible_mixtures_and_names_the_conflict():
    for names in (["replay", "ewc"], ["ewc", "replay"], ["agem", "l2"], ["agem", "replay"], ["finetune", "mas"],
                  ["replay", "online-ewc"], ["packnet"], ["my-own-method", "ewc"]):
        check_combination(names)
    for names, words in ((["ewc", "ewc"], "same method twice"), (["packnet", "hnet"], "which actor weights"),
                         (["l2", "mas"], "importance regularisers"), (["hnet", "ewc"], "weight owner"),
                         (["packnet", "agem"], "current task's weights"),
                         (["replay", "hnet"], "current task's weights")):
        with pytest.raises(ValueError, match=words):
            check_combination(names)
    with pytest.raises(ValueError, match="do not combine"):
        Composite("l2+ewc")


def test_composite_sums_losses_and_restores_its_members_by_name(tmp_path):
    agent = make_agent(protection=Composite("replay+l2", replay={"mode": "bc", "memory_per_task": 30},
                                            l2={"coefficient": 3.0}))
    composite = agent.protection
    assert composite.names == ["replay", "l2"]
    fill(agent, task=0)
    composite.on_task_end(agent, 0)
    replay, l2 = composite.members
    assert replay.memory_tasks == [0] and l2.consolidated == [0]
    agent.current_task = 1
    nudge(agent)
    state = agent.generator.get_state()
    total = composite.loss(agent, None)
    agent.generator.set_state(state)
    assert total.item() == pytest.approx(replay.loss(agent, None).item() + l2.loss(agent, None).item())

    agent.save(tmp_path / "agent.pt")
    loaded = SAC.load(tmp_path / "agent.pt")  # make_protection("composite") then the members by name
    assert loaded.protection.names == ["replay", "l2"]
    assert loaded.protection.members[1].coefficient == 3.0 and loaded.protection.members[0].mode == "bc"
    agent.generator.set_state(state)
    loaded.generator.set_state(state)
    assert loaded.protection.loss(loaded, None).item() == composite.loss(agent, None).item()


# ---------------------------------------------------------------------- end to end
MEMORY_METHODS = [
    ("agem", {"memory_per_task": 40, "episodic_batch_size": 8}),
    ("replay", {"mode": "reservoir", "batch_size": 16}),
    ("replay", {"mode": "bc", "memory_per_task": 40, "batch_size": 8}),
    ("composite", {"methods": "replay+ewc", "replay": {"mode": "bc", "memory_per_task": 40, "batch_size": 8},
                   "ewc": SMALL}),
    ("composite", {"methods": "agem+mas", "agem": {"memory_per_task": 40, "episodic_batch_size": 8}, "mas": SMALL}),
]


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
@pytest.mark.parametrize("name,kwargs", MEMORY_METHODS, ids=["agem", "reservoir", "bc", "bc+ewc", "agem+mas"])
def test_training_with_each_memory_method_runs_end_to_end(name, kwargs, trunk):
    agent = SAC(tiny_env(), tiny_config(trunk), protection=make_protection(name, **kwargs), seed=0)
    agent.learn(80)
    assert agent.current_task == 1
    metrics = agent.pop_metrics()
    assert all(np.isfinite(v) for v in metrics.values())
    members = agent.protection.members if name == "composite" else [agent.protection]
    for member in members:
        if isinstance(member, (AGEM, Replay)) and getattr(member, "mode", "bc") == "bc":
            assert member.memory_tasks == [0]
        if isinstance(member, AGEM):
            assert member.updates > 0
    if name != "agem" and kwargs.get("mode") != "reservoir":
        assert metrics["train/protection_loss"] > 0


# ---------------------------------------------------------------------- exact resume
class _Capture(Callback):
    """Take the agent's training state at the first episode end a few steps into task 1."""

    def __init__(self):
        self.state = None

    def on_episode_end(self, agent):
        if self.state is None and agent.current_task == 1 and agent.task_steps >= 10:
            self.state = (copy.deepcopy(agent.training_state()), pickle.dumps(agent.env.unwrapped), agent.num_timesteps)


@pytest.mark.parametrize("trunk,name,kwargs", [
    ("gru", "ewc", SMALL),
    ("mlp", "agem", {"memory_per_task": 40, "episodic_batch_size": 8}),
    ("gru", "replay", {"mode": "bc", "memory_per_task": 40, "batch_size": 8}),
    ("mlp", "replay", {"mode": "reservoir", "batch_size": 16}),
], ids=["ewc-gru", "agem-mlp", "bc-gru", "reservoir-mlp"])
def test_a_run_resumed_from_its_training_state_ends_bitwise_identical(trunk, name, kwargs):
    total = 80
    capture = _Capture()
    straight = SAC(tiny_env(), tiny_config(trunk), protection=make_protection(name, **kwargs), seed=0)
    straight.learn(total, callback=capture)
    state, env_pickle, step = capture.state
    resumed = SAC(tiny_env(), tiny_config(trunk), protection=make_protection(name, **kwargs), seed=0)
    resumed.load_training_state(state)
    resumed.env = pickle.loads(env_pickle)
    resumed.learn(total - step)
    for (n, a), b in zip(straight.actor.named_parameters(), resumed.actor.parameters()):
        assert torch.equal(a, b), n
    assert torch.equal(straight.log_alpha, resumed.log_alpha)


@pytest.mark.parametrize("quantity", ["tanh_mean", "pre_tanh_mean"])
def test_cloning_kl_is_the_episodic_codes_kl_on_the_squashed_mean(quantity):
    """ClonEx's episodic code (Episodic_SAC.kl_divergence over CW's actor, which returns tanh(mu)):
    sum_a log(s/s') + ((s' + 1e-6)^2 + (m' - m)^2) / (2 (s + 1e-6)^2) - 1/2, m = tanh(mu); mean over rows."""
    agent = make_agent()
    with torch.no_grad():
        agent.actor.mean.weight.mul_(10.0)  # saturated means
    fill(agent, task=0)
    bc = Replay(mode="bc", memory_per_task=30, batch_size=8, coefficient=100.0, quantity=quantity)
    bc.on_task_end(agent, 0)
    agent.current_task = 1
    nudge(agent)
    memory = bc.memory
    mean, log_std = run_actor(agent.actor, memory)
    old_mean, old_log_std = memory["old_mean"], memory["old_log_std"]
    if quantity == "tanh_mean":
        m, old_m, eps = torch.tanh(mean), torch.tanh(old_mean), 1e-6
    else:
        m, old_m, eps = mean, old_mean, 0.0
    s, old_s = log_std.exp() + eps, old_log_std.exp() + eps
    kl = (log_std - old_log_std + (old_s.square() + (old_m - m).square()) / (2 * s.square()) - 0.5).sum(-1)
    torch.testing.assert_close(bc.cloning_loss(agent, memory), 100.0 * kl.mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pre_tanh_mean"):
        Replay(mode="bc", quantity="squashed")
