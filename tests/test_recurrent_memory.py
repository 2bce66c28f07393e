"""Recurrent agents remember across whole episodes: sequence kernels, window states, gradients.

- every sequence kernel (GRU function, fused LSTM, stacked GRUs) equals the step-by-step
  reference in outputs and gradients;
- the state at a replayed window's start is the state an unroll from the episode start
  reaches;
- with the default settings, the answer step's loss has a gradient that reaches a cue
  150 steps back (chrono initialisation keeps it from vanishing), on every trunk;
- old agent files still load.
"""

import numpy as np
import pytest
import torch

from agents.nets.networks import Actor, NetworkConfig, RecurrentCell, TwinCritic, shared_input_features
from agents.replay import SequenceReplay
from agents.sac import SAC, SACConfig, SpaceSpec
from agents.nets.rnn_kernels import GRUSequence
from protection_helpers import tiny_env

RECURRENT = ("gru", "lstm", "mingru")


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


@pytest.mark.parametrize("kind", RECURRENT)
@pytest.mark.parametrize("with_reset", [False, True])
def test_sequence_kernels_equal_the_step_by_step_reference(kind, with_reset):
    torch.manual_seed(0)
    cell = RecurrentCell(kind, 7, 16, chrono_horizon=50)
    params = dict(cell.named_parameters())
    x = torch.randn(3, 23, 7, requires_grad=True)
    h0 = torch.randn(3, cell.state_size, requires_grad=True)
    reset = None
    if with_reset:
        reset = torch.zeros(3, 23, dtype=torch.bool)
        reset[1, 9] = reset[2, 0] = True
    results = []
    for run in (cell.run, cell.run_loop):
        out, last = run(params, "", x, h0, reset)
        loss = (out * torch.linspace(-1, 1, 16)).square().sum() + last.sin().sum()
        results.append((out, last, grads(loss, [x, h0, *params.values()])))
    (out_a, last_a, grad_a), (out_b, last_b, grad_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-5) and torch.allclose(last_a, last_b, atol=1e-5)
    for a, b in zip(grad_a, grad_b):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("trunk,layers,scan", [("gru", 1, None), ("mingru", 2, "linear"), ("mingru", 2, "log"),
                                               ("mingru", 1, "loop")])
def test_stacked_members_equal_separate_trunks(trunk, layers, scan):
    """The SAC update runs actor, critics and target critics as one stacked GRU call, or
    one minGRU scan per layer."""
    torch.manual_seed(1)
    config = NetworkConfig(input_dim=5, trunk=trunk, hidden_sizes=(8,), rnn_size=6, chrono_horizon=30,
                           rnn_layers=layers)
    actor, critic = Actor(config), TwinCritic(config)
    for net in (actor, critic.q1, critic.q2):
        if scan is not None:
            net.cell.scan = scan
    obs, prev_action, prev_reward = torch.randn(2, 9, 5), torch.randn(2, 9, 4), torch.randn(2, 9)
    states = [None, torch.randn(2, 6 * layers), None]
    trunks = [(actor, None), (critic.q1, None), (critic.q2, None)]
    stacked = shared_input_features(trunks, obs, prev_action, prev_reward, states)
    separate = [t.features(dict(t.named_parameters()), obs, prev_action, prev_reward, s, None)[0]
                for (t, _), s in zip(trunks, states)]
    weights = [p for t, _ in trunks for p in t.parameters()]
    loss_a = sum((f * (i + 1)).square().sum() for i, f in enumerate(stacked))
    loss_b = sum((f * (i + 1)).square().sum() for i, f in enumerate(separate))
    for a, b in zip(stacked, separate):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(grads(loss_a, weights), grads(loss_b, weights)):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_stacked_gru_skips_the_backward_of_frozen_trailing_members():
    """Target critics come last in the stacked call and take no gradient: the trained
    members' gradients are those of the full backward, the frozen ones get zeros."""
    torch.manual_seed(3)
    gx = torch.randn(3, 2, 7, 12, requires_grad=True)
    h0, w, b = torch.randn(3, 2, 4, requires_grad=True), torch.randn(3, 12, 4), torch.randn(3, 12)
    w.requires_grad_(True), b.requires_grad_(True)
    inputs = [gx, h0, w, b]
    weight = torch.linspace(-1, 1, 7).view(1, 1, 7, 1)
    def gradients(trained):
        out, last = GRUSequence.apply(*inputs, None, trained)
        return grads((out * weight).square().sum() + last.sin().sum(), inputs)

    full, part = gradients(None), gradients(2)
    for a, b_ in zip(full, part):
        assert torch.allclose(a[:2], b_[:2], atol=1e-5)
        assert b_[2].abs().max() == 0 and a[2].abs().max() > 0  # the full backward would not be zero there


def test_stacked_call_trains_only_the_leading_members():
    from agents.nets.networks import _leading_trained

    config = NetworkConfig(input_dim=3, trunk="gru", hidden_sizes=(4,), rnn_size=2)
    trained, frozen = Actor(config), Actor(config)
    frozen.requires_grad_(False)
    own = lambda t: dict(t.named_parameters())  # noqa: E731
    assert _leading_trained([own(trained), own(trained), own(frozen)], [None] * 3) == 2
    assert _leading_trained([own(frozen), own(trained)], [None] * 2) == 2  # not leading: every member
    assert _leading_trained([own(frozen)] * 2, [None, torch.zeros(1, 2, requires_grad=True)]) == 2


def test_gru_function_has_no_gradient_for_a_constant_initial_state():
    gx, h0 = torch.randn(1, 2, 4, 9, requires_grad=True), torch.zeros(1, 2, 3)
    out, _ = GRUSequence.apply(gx, h0, torch.randn(1, 9, 3), torch.randn(1, 9), None)
    out.sum().backward()
    assert gx.grad is not None and torch.isfinite(gx.grad).all()


def fill(replay, lengths, obs_dim):
    rng = np.random.default_rng(0)
    for length in lengths:
        for t in range(length):
            replay.add(rng.normal(size=obs_dim), rng.uniform(-1, 1, 4), float(rng.normal()), rng.normal(size=obs_dim),
                       False, t == length - 1, task=0)


@pytest.mark.parametrize("kind", RECURRENT)
def test_window_start_state_equals_an_unroll_from_the_episode_start(kind):
    """Windows of 5 steps from episodes of 23: the state the update starts each window
    from is the one the actor reaches running over the whole episode."""
    torch.manual_seed(2)
    config = NetworkConfig(input_dim=3, trunk=kind, hidden_sizes=(8,), rnn_size=6, prev_reward=True)
    actor = Actor(config)
    replay = SequenceReplay(1000, 3, 4, seq_len=5, seed=0)
    fill(replay, [23, 23], obs_dim=3)
    batch = replay.sample(40)
    assert batch.prefix_steps > 0
    start_state = actor.initial_state(batch.prefix_obs, batch.prefix_prev_action, batch.prefix_prev_reward,
                                      batch.prefix_mask)
    checked = 0
    for row in range(40):
        steps = int(batch.prefix_mask[row].sum())
        if steps == 0:
            assert start_state[row].abs().sum() == 0
            continue
        full = torch.from_numpy(replay.obs[:46]).float()
        first_obs = batch.obs[row, 0]
        t0 = int(torch.nonzero((full == first_obs).all(1))[0])  # the window's first step in the stream
        begin = 0 if t0 < 23 else 23
        assert t0 - begin == steps
        obs = full[begin:t0].unsqueeze(0)
        actions = torch.from_numpy(replay.action[begin:t0]).float()
        rewards = torch.from_numpy(replay.reward[begin:t0]).float()
        prev_action = torch.cat([torch.zeros(1, 4), actions[:-1]]).unsqueeze(0)
        prev_reward = torch.cat([torch.zeros(1), rewards[:-1]]).unsqueeze(0)
        _, _, direct = actor(obs, prev_action, prev_reward)
        assert torch.allclose(start_state[row], direct[0], atol=1e-5)
        checked += 1
    assert checked >= 10


def answer_gradient(trunk: str, seq_len: int | None = None, cue_back: int = 150) -> float:
    """|d action at an episode's last step / d its first observation|, through the window the
    replay gives that step (a prefix carries no gradient, by design)."""
    spec = SpaceSpec(obs_dim=6, task_width=6, num_tasks=1, action_dim=4, onehot=False)
    overrides = {} if seq_len is None else {"seq_len": seq_len}
    agent = SAC(config=SACConfig(trunk=trunk, hidden_sizes=(16,), rnn_size=16, **overrides), spec=spec, seed=0)
    fill(agent.replay, [cue_back + 1], obs_dim=6)
    batch = agent.replay.sample(64)
    row = int(batch.prefix_mask.sum(1).argmax()) if batch.prefix_steps else 0  # the episode's last window
    if batch.prefix_steps and batch.prefix_mask[row].sum() > 0:
        return 0.0
    last = int(batch.mask[row].sum()) - 1
    obs = batch.obs[row : row + 1, : last + 1].clone().requires_grad_(True)
    mean, _, _ = agent.actor(obs, batch.prev_action[row : row + 1, : last + 1], batch.prev_reward[row : row + 1, : last + 1])
    (grad,) = torch.autograd.grad(mean[0, -1].sum(), obs)
    return float(grad[0, 0].norm())


@pytest.mark.parametrize("trunk", RECURRENT)
def test_default_windows_carry_gradient_from_the_answer_to_a_cue_150_steps_back(trunk):
    assert answer_gradient(trunk) > 1e-4
    assert answer_gradient(trunk, seq_len=32) == 0.0  # the old default window cannot


def test_bad_recurrent_settings_are_refused():
    with pytest.raises(ValueError, match="seq_len"):
        SACConfig(trunk="gru", seq_len=0)
    with pytest.raises(ValueError, match="burn_in"):
        SACConfig(trunk="gru", burn_in=-2)
    with pytest.raises(ValueError, match="chrono_horizon"):
        SACConfig(trunk="gru", chrono_horizon=-1)
    with pytest.raises(ValueError, match="positive"):  # checked when the networks are built
        SAC(config=SACConfig(trunk="gru", rnn_size=0), spec=SpaceSpec(3, 3, 1, 4, False))


def test_agent_file_from_before_whole_episode_replay_loads(tmp_path):
    """Files written before this change have no chrono_horizon and the old window settings."""
    spec = SpaceSpec(obs_dim=6, task_width=6, num_tasks=1, action_dim=4, onehot=False)
    agent = SAC(config=SACConfig(trunk="gru", hidden_sizes=(16,), rnn_size=8, seq_len=32, burn_in=0), spec=spec)
    path = tmp_path / "old.pt"
    agent.save(path)
    state = torch.load(path, weights_only=False)
    del state["config"]["chrono_horizon"]
    torch.save(state, path)
    loaded = SAC.load(path)
    assert loaded.config.seq_len == 32 and loaded.config.burn_in == 0
    for (name, a), (_, b) in zip(agent.actor.named_parameters(), loaded.actor.named_parameters()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------- every method, every trunk
METHOD_KWARGS = {
    "l2": {}, "ewc": {"batches": 2, "batch_size": 8}, "online-ewc": {"batches": 2, "batch_size": 8},
    "mas": {"batches": 2, "batch_size": 8}, "packnet": {"retrain_steps": 4}, "hnet": {}, "finetune": {},
    "replay": {"mode": "bc", "memory_per_task": 40, "batch_size": 8},
    "agem": {"memory_per_task": 40, "episodic_batch_size": 4},
    "vcl": {}, "clonex": {"memory_per_task": 40, "batch_size": 8},
}


def memory_env():
    """Two memory tasks whose episodes (8 steps) are shorter than the default window."""
    return tiny_env(tasks=("repeat-first(d=6)", "tmaze(L=7)"), steps_per_task=48)


def tiny(trunk, **overrides):
    values = dict(trunk=trunk, hidden_sizes=(8,), rnn_size=6, random_steps=8, update_after=8, update_every=8,
                  gradient_steps=2)
    values.update(overrides)
    return SACConfig(**values)


@pytest.mark.parametrize("trunk,seq_len", [(t, None) for t in RECURRENT] + [("gru", 3)],
                         ids=[*RECURRENT, "gru-prefixes"])
@pytest.mark.parametrize("name", sorted(METHOD_KWARGS))
def test_every_protection_method_trains_on_every_trunk(name, trunk, seq_len):
    """Default windows (whole episodes) on every trunk; 3-step windows with prefixes on the GRU."""
    from agents.protection import make_protection

    overrides = {} if seq_len is None else {"seq_len": seq_len}
    agent = SAC(memory_env(), tiny(trunk, **overrides), protection=make_protection(name, **METHOD_KWARGS[name]), seed=0)
    agent.learn(96)
    assert agent.current_task == 1 and agent.num_updates > 0
    metrics = agent.pop_metrics()
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    for param in [*agent.actor.parameters(), *agent.critic.parameters()]:
        assert torch.isfinite(param).all()


@pytest.mark.parametrize("name", sorted(METHOD_KWARGS))
def test_every_protection_method_trains_with_the_relu_body(name):
    """The ReLU body has no LayerNorm parameters: methods that walk an agent's weights must not expect them."""
    from agents.protection import make_protection

    agent = SAC(memory_env(), tiny("gru", body="relu"), protection=make_protection(name, **METHOD_KWARGS[name]), seed=0)
    assert not any("norm" in n for n, _ in agent.actor.named_parameters())
    agent.learn(96)
    assert agent.current_task == 1 and agent.num_updates > 0
    assert all(np.isfinite(v) for v in agent.pop_metrics().values())
    for param in [*agent.actor.parameters(), *agent.critic.parameters()]:
        assert torch.isfinite(param).all()


@pytest.mark.parametrize("trunk", RECURRENT)
def test_resume_is_exact_with_default_windows(trunk):
    import copy
    import pickle

    from agents.sac import Callback

    class Capture(Callback):
        state = None

        def on_episode_end(self, agent):
            if self.state is None and agent.num_timesteps >= 40:
                self.state = (copy.deepcopy(agent.training_state()), pickle.dumps(agent.env.unwrapped), agent.num_timesteps)

    capture, total = Capture(), 96
    straight = SAC(memory_env(), tiny(trunk), protection=None, seed=0)
    straight.learn(total, callback=capture)
    state, env_pickle, step = capture.state
    resumed = SAC(memory_env(), tiny(trunk), seed=0)
    resumed.load_training_state(state)
    resumed.env = pickle.loads(env_pickle)
    resumed.learn(total - step)
    for (n, a), b in zip([*straight.actor.named_parameters(), *straight.critic.named_parameters()],
                         [*resumed.actor.parameters(), *resumed.critic.parameters()]):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_cuda_fused_path_equals_the_reference_on_cpu(kind):
    """The cuDNN path (``torch._VF`` with the weights passed in) runs on CPU too: same numbers."""
    from agents.nets.rnn_kernels import fused_rnn

    torch.manual_seed(3)
    cell = RecurrentCell(kind, 5, 7, chrono_horizon=20)
    params = dict(cell.named_parameters())
    x, h0 = torch.randn(2, 13, 5, requires_grad=True), torch.randn(2, cell.state_size, requires_grad=True)
    out_a, last_a = fused_rnn(kind, x, h0, params["weight_ih"], params["weight_hh"], params["bias_ih"],
                              params["bias_hh"], 7)
    out_b, last_b = cell.run_loop(params, "", x, h0, None)
    assert torch.allclose(out_a, out_b, atol=1e-5) and torch.allclose(last_a, last_b, atol=1e-5)
    tensors = [x, h0, *params.values()]
    for a, b in zip(grads(out_a.square().sum() + last_a.sum(), tensors), grads(out_b.square().sum() + last_b.sum(), tensors)):
        assert torch.allclose(a, b, atol=1e-4)
