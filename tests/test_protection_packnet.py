"""PackNet through the real agent: old tasks' weights and actions stay bitwise unchanged,
owners partition the weights, each prune keeps the right share, checkpoints round-trip."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import contenv  # noqa: F401  (registers the ids)
from agents.protection import PROTECTIONS, make_protection, register_protection
from agents.protection.packnet import PackNet
from agents.sac import SAC, SACConfig

TASKS = ["repeat-first(d=2)", "copy(p=1,i=1)", "repeat-first(d=1)"]
STEPS = 80  # per task


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.delitem(PROTECTIONS, "packnet", raising=False)  # undone after the test
    register_protection("packnet", "agents.protection.packnet:PackNet")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: extra threads only fight over the shared cores
    yield
    torch.set_num_threads(threads)


def make_agent(trunk: str, retrain_steps: int = 10, tasks=TASKS) -> SAC:
    env = gym.make("contenv/Sequence-v0", tasks=tasks, steps_per_task=STEPS)
    config = SACConfig(trunk=trunk, hidden_sizes=(16, 16), rnn_size=8, batch_size=8, seq_len=4,
                       random_steps=20, update_after=20, update_every=20, gradient_steps=5)
    return SAC(env, config, protection=make_protection("packnet", retrain_steps=retrain_steps), seed=0)


def deterministic_actions(agent: SAC, position: int, steps: int = 3) -> np.ndarray:
    """Actions of a fixed batch of observation sequences (recurrent state carried along)."""
    rng = np.random.default_rng(7)
    state, actions = None, []
    for step in range(steps):
        obs = rng.uniform(0.0, 1.0, (6, agent.spec.obs_dim)).astype(np.float32)
        action, state = agent.act(obs, state, np.full(6, step == 0), True, np.full(6, position), rewards=np.zeros(6))
        actions.append(action)
    return np.stack(actions)


def frozen_values(agent: SAC, packnet: PackNet, task: int) -> dict[str, torch.Tensor]:
    """What must never change once ``task`` is done: its owned entries, biases/LayerNorm,
    and its head rows."""
    a = agent.spec.action_dim
    out = {}
    for name, p in agent.actor.named_parameters():
        p = p.detach()
        if name in packnet.owner:
            out[name] = p[packnet.owner[name] <= task].clone()
        elif name.startswith(("mean.", "log_std.")):
            out[name] = p[: (task + 1) * a].clone()
        else:
            out[name] = p.clone()
    return out


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_old_tasks_are_bitwise_frozen(trunk: str) -> None:
    agent = make_agent(trunk)
    packnet = agent.protection
    recurrent = ["cell.weight_ih", "cell.weight_hh"] if trunk == "gru" else []
    assert packnet.managed(agent) == [*recurrent, "body.layers.0.weight", "body.layers.1.weight"]  # not the heads
    frozen, actions, sizes = {}, {}, {}
    for task in range(len(TASKS)):
        before = {name: p.detach().clone() for name, p in agent.actor.named_parameters()}
        agent.learn(STEPS)
        assert agent.current_task == task
        # Everything from earlier tasks is untouched, bit for bit, and so is its behaviour.
        for old in range(task):
            now = frozen_values(agent, packnet, old)
            for name, value in frozen[old].items():
                assert torch.equal(now[name], value), f"{name} of task {old} moved during task {task}"
            np.testing.assert_array_equal(deterministic_actions(agent, old), actions[old])
        # ... while this task did learn with what it owns (rules out a method that freezes all).
        trained = {name: (p.detach() != before[name]) for name, p in agent.actor.named_parameters()
                   if name in packnet.owner}
        assert all(bool(changed[packnet.owner[name] == task].any()) for name, changed in trained.items())
        # The prune left this task its share, zeroed the rest and gave it to the next task.
        left = len(TASKS) - task - 1
        for name, owner in packnet.owner.items():
            n_owned = sizes.get(name, owner.numel())
            kept = n_owned - round(n_owned * left / (left + 1))
            assert int((owner == task).sum()) == kept
            if left:
                weight = dict(agent.actor.named_parameters())[name]
                assert torch.all(weight[owner == task + 1] == 0)
                sizes[name] = n_owned - kept
        frozen[task] = frozen_values(agent, packnet, task)
        actions[task] = deterministic_actions(agent, task)
    # Owners partition every matrix into near-equal thirds.
    for name, owner in packnet.owner.items():
        counts = torch.bincount(owner.flatten(), minlength=len(TASKS))
        assert len(counts) == len(TASKS) and int(counts.sum()) == owner.numel()
        assert int(counts.max() - counts.min()) <= 2


def test_views_hide_later_tasks_and_clip_gradients() -> None:
    agent = make_agent("gru", tasks=TASKS[:2])
    agent.learn(2 * STEPS)
    packnet = agent.protection
    assert packnet.task_parameters(agent, 1) is None  # the latest task sees every weight
    view = packnet.task_parameters(agent, 0)
    for name, owner in packnet.owner.items():
        weight = dict(agent.actor.named_parameters())[name].detach()
        assert torch.equal(view[name], torch.where(owner == 0, weight, 0.0))
        assert bool(weight[owner == 1].ne(0).any())  # task 1 did use its weights
    # The whole update path clips to CW's 2e-5 after masking.
    loss, _ = agent.compute_loss(agent.replay.sample(8))
    agent.optimizer.zero_grad()
    loss.backward()
    packnet.after_backward(agent)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in agent.actor.parameters() if p.grad is not None]))
    assert float(norm) <= 2e-5 * (1 + 1e-4)
    assert all(float(p.grad[packnet.owner[n] == 0].abs().max()) == 0.0 for n, p in agent.actor.named_parameters()
               if n in packnet.owner)


def test_adam_momentum_cannot_move_frozen_weights() -> None:
    """A zero gradient is not enough: Adam moves a weight as long as its momentum is not
    zero. Fill every momentum of a fresh task-1 optimizer; frozen weights must still hold."""
    agent = make_agent("mlp", tasks=TASKS[:2])
    agent.learn(STEPS)
    packnet = agent.protection
    frozen = frozen_values(agent, packnet, 0)

    def dirty_momentum(agent: SAC) -> None:
        if agent.task_steps == 1:
            for p in agent.actor.parameters():
                agent.optimizer.state[p] = {"step": torch.tensor(10.0), "exp_avg": torch.ones_like(p),
                                            "exp_avg_sq": torch.ones_like(p)}

    agent.learn(STEPS, callback=dirty_momentum)
    now = frozen_values(agent, packnet, 0)
    assert all(torch.equal(now[name], value) for name, value in frozen.items())


def test_checkpoint_round_trip(tmp_path) -> None:
    agent = make_agent("gru", tasks=TASKS[:2])
    agent.learn(2 * STEPS)
    agent.save(tmp_path / "agent.pt")
    loaded = SAC.load(tmp_path / "agent.pt")
    assert loaded.protection.retrain_steps == 10 and loaded.protection.biases_frozen
    for name, owner in agent.protection.owner.items():
        assert torch.equal(loaded.protection.owner[name], owner)
    np.testing.assert_array_equal(deterministic_actions(loaded, 0), deterministic_actions(agent, 0))
    fresh = PackNet()
    fresh.load_state_dict(agent.protection.state_dict())
    assert fresh.max_owner == 1 and fresh.clip_norm == 2e-5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="retrain_steps"):
        PackNet(retrain_steps=-1)
    with pytest.raises(ValueError, match="clip_norm"):
        PackNet(clip_norm=0.0)
