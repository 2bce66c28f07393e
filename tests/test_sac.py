"""SAC agent: networks, hidden-state resets, the Continual World task-change rules, save/load."""

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import contenv
from agents.nets.networks import Actor, NetworkConfig, RecurrentCell, TwinCritic
from agents.sac import SAC, Callback, SACConfig, SpaceSpec

torch.set_num_threads(1)

TINY = dict(hidden_sizes=(16, 16), rnn_size=8, batch_size=8, seq_len=4)


def memory_env(steps_per_task=40, tasks=("repeat-first(d=2)", "bits(n=2,d=1)"), **kwargs):
    return contenv.ContinualEnv(list(tasks), steps_per_task=steps_per_task, **kwargs)


# ---------------------------------------------------------------------- networks


@pytest.mark.parametrize("kind, reference", [("gru", nn.GRU), ("lstm", nn.LSTM)])
def test_recurrent_cells_match_torch(kind, reference):
    torch.manual_seed(0)
    cell, ref = RecurrentCell(kind, 5, 7), reference(5, 7, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(torch.randn_like(getattr(cell, name)))
            getattr(ref, name + "_l0").copy_(getattr(cell, name))
    x = torch.randn(3, 6, 5)
    out, _ = cell.run(dict(cell.named_parameters()), "", x, None, None)
    assert torch.allclose(out, ref(x)[0], atol=1e-6)


def test_layer_norm_uses_keras_epsilon_like_continual_world():
    """CW's body is Keras: LayerNormalization(epsilon=1e-3), not torch's 1e-5 (it matters for small variances)."""
    from agents.nets.networks import MLPBody

    body = MLPBody(3, (4,))
    x = torch.tensor([[0.01, -0.02, 0.03]])
    h = x @ body.layers[0].weight.T + body.layers[0].bias
    expected = torch.tanh((h - h.mean(-1, keepdim=True)) / (h.var(-1, unbiased=False, keepdim=True) + 1e-3).sqrt())
    torch.testing.assert_close(body.run(dict(body.named_parameters()), "", x), expected)
    assert body.norm.eps == 1e-3


def test_relu_body_is_plain_relu_layers_without_a_norm():
    """The plasticity literature's network: Linear -> ReLU on every layer, nothing else."""
    from agents.nets.networks import MLPBody

    body = MLPBody(3, (4, 5), kind="relu")
    assert not hasattr(body, "norm") and len(dict(body.named_parameters())) == 4
    x = torch.randn(6, 3)
    h = torch.relu(x @ body.layers[0].weight.T + body.layers[0].bias)
    expected = torch.relu(h @ body.layers[1].weight.T + body.layers[1].bias)
    torch.testing.assert_close(body.run(dict(body.named_parameters()), "", x), expected)
    cw = MLPBody(3, (4, 5))  # CW's: negative outputs from leaky ReLU, a norm in front
    assert hasattr(cw, "norm") and (cw.run(dict(cw.named_parameters()), "", x * 10) < 0).any()


def test_unknown_body_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'cw'.*'relu'"):
        SACConfig(body="gelu")


def test_reset_mask_restarts_the_recurrent_state():
    cell = RecurrentCell("gru", 4, 6)
    p = dict(cell.named_parameters())
    first, second = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    reset = torch.zeros(2, 8, dtype=torch.bool)
    reset[:, 3] = True
    joined, _ = cell.run(p, "", torch.cat([first, second], 1), None, reset)
    alone, _ = cell.run(p, "", second, None, None)
    assert torch.allclose(joined[:, 3:], alone, atol=1e-6)


def test_networks_run_on_given_parameters_and_under_vmap():
    config = NetworkConfig(input_dim=3, num_heads=2, trunk="lstm", hidden_sizes=(8, 8), rnn_size=5)
    actors = [Actor(config) for _ in range(3)]
    obs, prev_a, prev_r = torch.randn(4, 6, 3), torch.randn(4, 6, 4), torch.randn(4, 6)
    task = torch.randint(2, (4, 6))
    own = actors[0](obs, prev_a, prev_r, task)[0]
    given = actors[1](obs, prev_a, prev_r, task, params=dict(actors[0].named_parameters()))[0]
    assert torch.equal(own, given)
    assert torch.equal(own, torch.func.functional_call(actors[0], dict(actors[0].named_parameters()),
                                                       (obs, prev_a, prev_r, task))[0])
    # A partial dict replaces only the names it holds.
    head_only = {"mean.bias": actors[0].mean.bias + 1.0}
    assert torch.allclose(actors[0](obs, prev_a, prev_r, task, params=head_only)[0], own + 1.0, atol=1e-6)
    # Several seeds stacked into one batched model.
    stacked, _ = torch.func.stack_module_state(actors)
    batched = torch.func.vmap(lambda p: actors[0](obs, prev_a, prev_r, task, params=p)[0])(stacked)
    for i, actor in enumerate(actors):
        assert torch.allclose(batched[i], actor(obs, prev_a, prev_r, task)[0], atol=1e-5)


def test_multi_head_outputs_follow_the_task_index():
    config = NetworkConfig(input_dim=3, num_heads=3, hidden_sizes=(8,))
    critic = TwinCritic(config)
    obs, action = torch.randn(5, 1, 3), torch.randn(5, 1, 4)
    q = [critic(obs, action, task=torch.full((5, 1), t)) for t in range(3)]
    assert q[0].shape == (2, 5, 1)
    with torch.no_grad():
        critic.q1.head.weight[1] += 1.0  # only head 1 of critic 1 changes
    assert torch.equal(critic(obs, action, task=torch.full((5, 1), 0)), q[0])
    assert not torch.equal(critic(obs, action, task=torch.full((5, 1), 1))[0], q[1][0])


# ---------------------------------------------------------------------- hidden state


def gru_agent(**overrides):
    spec = SpaceSpec(obs_dim=8, task_width=6, num_tasks=2, action_dim=4, onehot=True)
    return SAC(None, SACConfig(trunk="gru", **{**TINY, **overrides}), spec=spec, seed=0)


def test_act_resets_the_recurrent_state_of_rows_that_start_an_episode():
    agent = gru_agent()
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=(3, 8)).astype(np.float32) for _ in range(4)]
    positions = np.array([0, 1, 1])
    _, state = agent.act(obs[0], None, np.ones(3, bool), True, positions, rewards=np.zeros(3))
    for o in obs[1:3]:
        _, state = agent.act(o, state, np.zeros(3, bool), True, positions, rewards=np.zeros(3))
    assert state.hidden.abs().sum() > 0
    restarted, new_state = agent.act(obs[3], state, np.array([True, False, True]), True, positions, rewards=np.zeros(3))
    fresh, fresh_state = agent.act(obs[3], None, np.ones(3, bool), True, positions, rewards=np.zeros(3))
    assert np.allclose(restarted[[0, 2]], fresh[[0, 2]]) and not np.allclose(restarted[1], fresh[1])
    assert torch.allclose(new_state.hidden[[0, 2]], fresh_state.hidden[[0, 2]])


def test_act_needs_rewards_only_when_the_agent_reads_them():
    agent = gru_agent(prev_reward=True)
    obs = np.zeros((2, 8), np.float32)
    _, state = agent.act(obs, None, np.ones(2, bool), False, np.zeros(2, int), rewards=np.zeros(2))
    with pytest.raises(ValueError, match="rewards="):
        agent.act(obs, state, np.zeros(2, bool), False, np.zeros(2, int))


def test_training_resets_the_recurrent_state_at_every_episode_start():
    env = memory_env(steps_per_task=60)
    agent = SAC(env, SACConfig(trunk="gru", random_steps=20, update_after=10, update_every=10, **TINY), seed=0)
    seen = []
    forward = agent.actor.forward

    def recording(obs, prev_action=None, prev_reward=None, task=None, state=None, reset=None, params=None):
        if obs.shape[:2] == (1, 1):  # acting, not an update
            seen.append((agent._episode_length, state.abs().sum().item(), prev_action.abs().sum().item()))
        return forward(obs, prev_action, prev_reward, task, state, reset, params)

    agent.actor.forward = recording
    agent.learn(120)
    starts = [s for s in seen if s[0] == 0]
    later = [s for s in seen if s[0] > 0]
    assert len(starts) >= 20 and all(h == 0 and a == 0 for _, h, a in starts)
    assert all(h > 0 and a > 0 for _, h, a in later)


# ---------------------------------------------------------------------- task-change rules


class Recorder(Callback):
    def __init__(self):
        self.rows = []

    def on_step(self, agent):
        self.rows.append(dict(task=agent.current_task, task_steps=agent.task_steps, replay=len(agent.replay),
                              optimizer=agent.optimizer, optimizer_state=len(agent.optimizer.state),
                              updates=agent.num_updates, log_alpha=agent.log_alpha.detach().clone()))


def test_continual_world_task_change_rules():
    env = memory_env(steps_per_task=40)
    config = SACConfig(random_steps=15, update_after=10, update_every=5, **TINY)
    agent = SAC(env, config, seed=0)
    policy_calls = []
    policy_action = agent._policy_action
    agent._policy_action = lambda obs: policy_calls.append(agent.task_steps) or policy_action(obs)
    recorder = Recorder()
    agent.learn(80, callback=recorder)
    rows = recorder.rows
    task0, task1 = rows[:40], rows[40:]
    assert [r["task"] for r in rows] == [0] * 40 + [1] * 40
    # Step counters and the replay restart with each task; the optimizer is reset (see the Adam test below).
    assert [r["task_steps"] for r in task1] == list(range(1, 41))
    assert [r["replay"] for r in task1] == list(range(1, 41))
    assert task1[0]["optimizer"] is not task0[-1]["optimizer"]
    # Uniform-random actions for the first 15 steps of every task (the policy acts from step 16 on).
    assert policy_calls == list(range(15, 40)) * 2
    # CW's schedule on its 0-based step index k within the task: 5 updates after every step with
    # k >= 10 and k % 5 == 0 (k = 10, 15, ..., 35), so none on the task's last step (k = 39).
    for task_rows in (task0, task1):
        done = [r["updates"] - task_rows[0]["updates"] for r in task_rows]
        assert done[9] == 0 and done[10] == 5 and done[14] == 5 and done[15] == 10 and done[-1] == 30
        assert done[-1] == done[-2]
    # One entropy coefficient per task: task 0's stays put while task 1 trains, and vice versa.
    init = config.init_log_alpha
    assert task0[-1]["log_alpha"][1] == init and task0[-1]["log_alpha"][0] != init
    assert torch.equal(task1[-1]["log_alpha"][0], task0[-1]["log_alpha"][0]) and task1[-1]["log_alpha"][1] != init


@pytest.mark.parametrize("mode", ["moments", "fresh"])
def test_task_change_zeroes_adams_moments_and_keeps_its_step_count_like_continual_world(mode):
    """CW's reset_optimizer zeroes every Adam variable but TF2's `iterations`: the moments restart,
    the bias correction does not. "fresh" (a new Adam) restarts both."""
    env = memory_env(steps_per_task=40)
    config = SACConfig(random_steps=15, update_after=10, update_every=5, optimizer_reset=mode, **TINY)
    agent = SAC(env, config, seed=0)
    agent.learn(40)  # all of task 0: 30 updates
    before = {p: {k: v.clone() for k, v in state.items()} for p, state in agent.optimizer.state.items()}
    assert before and all(float(s["step"]) == 30 for s in before.values())
    agent.learn(1)  # the first step of task 1: the task change, no update yet
    assert agent.current_task == 1 and agent.num_updates == 30
    state = agent.optimizer.state
    if mode == "fresh":
        assert len(state) == 0
        return
    assert set(state) == set(before)
    for p, values in state.items():
        assert float(values["step"]) == 30
        assert float(values["exp_avg"].abs().sum()) == 0 and float(values["exp_avg_sq"].abs().sum()) == 0
        assert float(before[p]["exp_avg_sq"].abs().sum()) > 0 or p is agent.log_alpha
    agent.learn(10)  # 5 more updates: counting goes on from 30
    assert all(float(s["step"]) == 35 for p, s in agent.optimizer.state.items() if p is not agent.log_alpha)


def test_old_configs_and_bad_optimizer_resets():
    config = SACConfig.from_dict({"reset_optimizer_on_task_change": True})  # a config saved before the option
    assert config.optimizer_reset == "moments"
    with pytest.raises(ValueError, match="moments"):
        SACConfig(optimizer_reset="zero")


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_a_fixed_temperature_stays_where_a_tuned_one_moves(trunk):
    """--no-tune-alpha is SAC v1's fixed temperature: exp(init_log_alpha) through every update."""
    runs = {}
    for tune in (True, False):
        config = SACConfig(**TINY, trunk=trunk, random_steps=10, update_after=10, update_every=5, init_log_alpha=-3.0,
                           tune_alpha=tune)
        agent = SAC(memory_env(), config, seed=0)
        agent.learn(40)
        runs[tune] = agent.log_alpha.detach().clone()
    assert torch.equal(runs[False], torch.full_like(runs[False], -3.0))
    assert not torch.allclose(runs[True][0], torch.tensor(-3.0))


def test_a_non_finite_target_entropy_is_refused():
    with pytest.raises(ValueError, match="target_entropy must be a finite number"):
        SACConfig(target_entropy=float("nan"))
    agent = SAC(memory_env(), SACConfig(**TINY, trunk="gru", target_entropy=1.5), seed=0)
    assert agent.target_entropy == 1.5 and SAC(memory_env(), SACConfig(**TINY), seed=0).target_entropy == -4.0


def test_only_true_terminations_stop_bootstrapping():
    env = gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=25, horizon=10)
    agent = SAC(env, SACConfig(random_steps=50, update_after=100, replay_size=100, **TINY), seed=0)
    agent.config.reset_replay_on_task_change = False
    agent.learn(50)  # time limits at 10, 20, ... and a task switch at step 25, mid-episode
    assert len(agent.replay) == 50 and agent.replay.terminated[:50].sum() == 0
    memory = SAC(memory_env(), SACConfig(random_steps=50, update_after=100, **TINY), seed=0)
    memory.learn(20)  # repeat-first(d=2) terminates after 4 steps
    assert memory.replay.terminated[:20].tolist() == [0, 0, 0, 1] * 5


def test_padded_and_masked_steps_do_not_change_the_loss():
    env = memory_env(tasks=("repeat-first(d=3)", "copy(p=2)"))
    agent = SAC(env, SACConfig(trunk="gru", random_steps=100, update_after=100, **{**TINY, "seq_len": 8}), seed=0)
    agent.learn(40)
    batch = agent.replay.sample(16)
    batch = batch.padded(batch.steps + 3)  # windows of one length here: pad them all
    padded = batch.mask == 0
    assert padded.any()
    noisy = type(batch)(**vars(batch))
    noisy.obs = batch.obs.clone()
    noisy.obs[:, 1:][padded] = 77.0
    noisy.action = batch.action.masked_fill(padded[..., None], -5.0)
    noisy.reward = batch.reward.masked_fill(padded, 9.0)
    noisy.terminated = batch.terminated.masked_fill(padded, 1.0)
    state = agent.generator.get_state()
    loss, _ = agent.compute_loss(batch)
    agent.generator.set_state(state)
    noisy_loss, _ = agent.compute_loss(noisy)
    assert torch.allclose(loss, noisy_loss, atol=1e-6)


def test_gradient_flows_to_actor_from_actor_loss_only_through_actions():
    """The actor's Q term reaches the actor but never the critic's weights."""
    env = memory_env()
    agent = SAC(env, SACConfig(random_steps=100, update_after=100, **TINY), seed=0)
    agent.learn(30)
    batch = agent.replay.sample(8)
    _, metrics = agent.compute_loss(batch)
    # Rebuild the actor loss alone and check the critic gets no gradient from it.
    agent.optimizer.zero_grad(set_to_none=True)
    obs = agent.net_obs(batch.obs).contiguous()
    mean, log_std, _ = agent.actor(obs[:, :1].contiguous(), task=batch.task)
    from agents.nets.networks import squashed_sample

    action, _ = squashed_sample(mean, log_std, torch.randn_like(mean))
    q = agent.critic.q1
    frozen = {k: v.detach() for k, v in q.named_parameters()}
    q.values(obs[:, :1].contiguous(), action, batch.task, params=frozen).sum().backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_critic_values_from_a_shared_feature_part_equal_the_whole_input(trunk):
    """The update computes W_f f once for both actions (QNetwork.feature_part): same Q, same gradients as
    the body on [features, action]; detached, the actor's term reaches only the action."""
    agent = SAC(memory_env(), SACConfig(trunk=trunk, **TINY), seed=0)
    q = agent.critic.q1
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(3, 5, q.feature_dim, generator=gen, requires_grad=True)
    action = torch.randn(3, 5, agent.spec.action_dim, generator=gen, requires_grad=True)
    task = torch.tensor([0, 1, 1]).unsqueeze(1).expand(3, 5)
    leaves = [features, action, *(p for name, p in q.named_parameters() if not name.startswith("cell."))]
    whole = q.values(features, action, task)
    parts = q.values(None, action, task, feature_part=q.feature_part(features))
    torch.testing.assert_close(parts, whole)
    weight = torch.randn(whole.shape, generator=gen)
    for got, want in zip(torch.autograd.grad((parts * weight).sum(), leaves),
                         torch.autograd.grad((whole * weight).sum(), leaves)):
        torch.testing.assert_close(got, want)
    frozen = {name: p.detach() for name, p in q.named_parameters()}
    actor_term = q.values(None, action, task, params=frozen, feature_part=q.feature_part(features).detach())
    grads = torch.autograd.grad(actor_term.sum(), leaves, allow_unused=True)
    assert grads[0] is None and grads[1].abs().sum() > 0 and all(g is None for g in grads[2:])


# ---------------------------------------------------------------------- verbs, save/load, bad input


@pytest.mark.parametrize("trunk", ["mlp", "gru", "lstm", "mingru"])
def test_save_load_round_trip_gives_the_same_actions(tmp_path, trunk):
    env = memory_env()
    agent = SAC(env, SACConfig(trunk=trunk, random_steps=5, update_after=5, update_every=5, **TINY), seed=3)
    agent.learn(30)
    agent.save(tmp_path / "agent.pt")
    loaded = SAC.load(tmp_path / "agent.pt")
    assert loaded.current_task == agent.current_task and loaded.num_timesteps == 30
    rng = np.random.default_rng(0)
    obs = rng.uniform(size=(5, 3, env.observation_space.shape[0])).astype(np.float32)
    states = [None, None]
    for t in range(5):
        a = agent.act(obs[t], states[0], np.full(3, t == 0), True, np.array([0, 1, 1]), rewards=np.zeros(3))
        b = loaded.act(obs[t], states[1], np.full(3, t == 0), True, np.array([0, 1, 1]), rewards=np.zeros(3))
        assert np.array_equal(a[0], b[0])
        states = [a[1], b[1]]
    assert torch.equal(loaded.log_alpha, agent.log_alpha)


def test_predict_single_and_batched():
    env = gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=20, horizon=10)
    agent = SAC(env, SACConfig(**TINY), seed=0)
    obs, _ = env.reset(seed=0)
    action, state = agent.predict(obs, deterministic=True)
    assert action.shape == (4,) and state is None and np.all(np.abs(action) <= 1)
    actions, _ = agent.predict(np.stack([obs, obs]), deterministic=True)
    assert actions.shape == (2, 4) and np.allclose(actions[0], action)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_training_acting_and_checkpoints_on_every_device(tmp_path, device, trunk):
    from agents.training.checkpoint import load_checkpoint, save_checkpoint

    def agent():
        return SAC(memory_env(), SACConfig(trunk=trunk, random_steps=5, update_after=5, update_every=5, **TINY),
                   seed=0, device=device)

    first = agent().learn(12)  # stops between episodes (repeat-first(d=2) has 4 steps)
    save_checkpoint(tmp_path / "checkpoint.pt", first)
    first.learn(20)
    second = agent()
    load_checkpoint(tmp_path / "checkpoint.pt", second)
    second.learn(20)
    assert torch.equal(first.log_alpha, second.log_alpha)
    assert all(torch.equal(a, b) for a, b in zip(first.actor.parameters(), second.actor.parameters()))
    obs = np.zeros((2, second.spec.obs_dim), np.float32)
    actions, _ = second.act(obs, None, np.ones(2, bool), False, np.array([0, 1]), rewards=np.zeros(2))
    assert actions.shape == (2, 4) and second.actor.mean.weight.device.type == device


def test_spaces_the_agent_cannot_handle_are_refused():
    with pytest.raises(ValueError, match="Box action"):
        SAC(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        SAC(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="unknown agent trunk"):
        SACConfig(trunk="transformer")


def test_hidden_task_id_gives_a_single_head_and_onehot_a_head_per_task():
    assert SAC(memory_env(task_id="hidden"), SACConfig(**TINY)).num_heads == 1
    assert SAC(memory_env(), SACConfig(**TINY)).num_heads == 2


# ---------------------------------------------------------------------- learning (slow)


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_learning.py"
    spec = importlib.util.spec_from_file_location("script_bench_learning", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_learning_benchmark_never_touches_the_replay_window_settings(tmp_path):
    """Issue #10 item 5: budget, sizes and entropy may be set per run; windows, burn-in and batch may not."""
    bench = _bench_module()
    defaults = _window_defaults()
    for task in bench.MEMORY_SETTINGS:
        for trunk in ("gru", "mingru", "mlp"):
            settings = bench.memory_settings(task, trunk)
            args = bench.memory_args(trunk, task, settings.pop("steps"), tmp_path, **settings)
            assert (args.seq_len, args.burn_in, args.batch_size) == defaults, (task, trunk)
            assert args.sac_config().seq_len == 200 and args.sac_config().burn_in is None
    assert bench.memory_settings("tmaze(L=100)", "mlp") == bench.memory_settings("tmaze(L=100)", "gru")
    with pytest.raises(SystemExit, match="known: repeat-first"):
        bench.memory_settings("copy(p=9)", "gru")


def _window_defaults():
    from agents.training.run import TrainArgs

    args = TrainArgs()
    return args.seq_len, args.burn_in, args.batch_size


@pytest.mark.slow
def test_gru_solves_repeat_first_where_the_mlp_stays_at_chance(tmp_path):
    bench = _bench_module()
    task = "repeat-first(d=5)"
    # A fixed temperature of e^-6 (see bench_learning's MEMORY_SETTINGS); about a minute per run on an idle core.
    settings = dict(seed=0, device="cpu", init_log_alpha=-6.0, tune_alpha=False)
    gru = bench.run("gru", bench.memory_args("gru", task, 40_000, tmp_path, **settings))
    mlp = bench.run("mlp", bench.memory_args("mlp", task, 40_000, tmp_path, **settings))
    assert gru["final"] >= 0.8
    assert mlp["mean"] <= 0.35  # chance is 0.25 (500 test episodes over the run)


@pytest.mark.slow
def test_mlp_agent_learns_reach_within_30k_steps(tmp_path):
    bench = _bench_module()
    result = bench.run("mlp reach-v3", bench.metaworld_args("reach-v3", 30_000, tmp_path, seed=0, device="cpu"))
    assert result["best"] >= 0.8
