"""Seed batching (agents/batched.py, scripts/train.py --seeds): equivalence with single-seed SAC."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import contenv  # noqa: F401 - registers the scenarios
from agents.batched import BatchedSAC, noise_shapes, parse_seeds
from agents.batched_run import train_seeds
from agents.replay import Batch
from agents.run import RunError, TrainArgs, train
from agents.sac import SAC, SACConfig
from contenv.evaluation.rundir import load_run

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def tiny_env():
    return gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=100, horizon=25).unwrapped


def tiny_config(trunk="mlp", **overrides):
    return SACConfig(**{**dict(trunk=trunk, hidden_sizes=(16, 16), rnn_size=8, seq_len=5, batch_size=8,
                               random_steps=20, update_after=20, update_every=10), **overrides})


# ---------------------------------------------------------------------- the key equivalence: loss and gradients


@pytest.mark.parametrize("trunk", ["mlp", "gru", "lstm", "mingru"])
def test_batched_losses_and_gradients_equal_each_seeds_own_sac_loss(trunk):
    """The vmapped loss of K seeds on their batches equals SAC.compute_loss of each seed, gradients included."""
    seeds = [0, 1, 2]
    trainer = BatchedSAC([tiny_env() for _ in seeds], tiny_config(trunk), seeds=seeds)
    trainer.learn(60)  # weights moved away from their initialisation, replays filled
    fields, noises = trainer.sample()
    losses, metrics = trainer.compute_losses(fields, noises)
    trainer.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    for k, agent in enumerate(trainer.agents):
        reference = SAC(None, agent.config, seed=agent.seed, spec=agent.spec)
        for name in ("actor", "critic", "target_critic"):
            getattr(reference, name).load_state_dict(getattr(agent, name).state_dict())
        with torch.no_grad():
            reference.log_alpha.copy_(agent.log_alpha)
        own_noise = [n[k] for n in noises]
        reference._noise = lambda like: own_noise.pop(0)
        loss, own_metrics = reference.compute_loss(Batch(**{name: value[k] for name, value in fields.items()}))
        loss.backward()
        assert not own_noise
        torch.testing.assert_close(losses[k], loss, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(metrics[k], torch.stack(list(own_metrics.values())), rtol=1e-5, atol=1e-5)
        for prefix, module in (("actor.", reference.actor), ("critic.", reference.critic)):
            for name, param in module.named_parameters():
                torch.testing.assert_close(trainer.params[prefix + name].grad[k], param.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(trainer.params["log_alpha"].grad[k], reference.log_alpha.grad, rtol=1e-4, atol=1e-6)


def test_one_adam_over_stacked_tensors_equals_an_adam_per_seed():
    torch.manual_seed(0)
    stacked = torch.randn(3, 5, 4, requires_grad=True)
    singles = [torch.nn.Parameter(stacked.detach()[k].clone()) for k in range(3)]
    shared = torch.optim.Adam([stacked], lr=1e-2, eps=1e-7)
    own = [torch.optim.Adam([p], lr=1e-2, eps=1e-7) for p in singles]
    for _ in range(5):
        grads = torch.randn(3, 5, 4)
        stacked.grad = grads.clone()
        shared.step()
        for k, (p, opt) in enumerate(zip(singles, own)):
            p.grad = grads[k].clone()
            opt.step()
    assert all(torch.equal(stacked.detach()[k], singles[k].detach()) for k in range(3))


def test_gradient_clipping_is_per_seed_like_clip_grad_norm():
    from agents.batched import clip_per_seed

    torch.manual_seed(0)
    stacked = [torch.zeros(3, 4, 5, requires_grad=True), torch.zeros(3, 5, requires_grad=True)]
    for p, scale in zip(stacked, (1.0, 0.01)):
        p.grad = torch.randn(p.shape) * scale
    singles = [[torch.zeros(p.shape[1:], requires_grad=True) for p in stacked] for _ in range(3)]
    for k, params in enumerate(singles):
        for p, s in zip(params, stacked):
            p.grad = s.grad[k].clone()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
    clip_per_seed(stacked, 0.5)
    for k, params in enumerate(singles):
        for p, s in zip(params, stacked):
            torch.testing.assert_close(s.grad[k], p.grad)


# ---------------------------------------------------------------------- whole runs


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_each_seed_of_a_batched_run_reproduces_its_single_seed_run(trunk):
    """Two tasks (a task change: empty replay, fresh optimizer, random steps again), 200 steps."""
    config = tiny_config(trunk)
    trainer = BatchedSAC([tiny_env(), tiny_env()], config, seeds=[3, 4])
    trainer.learn(200)
    params = {}
    for agent in trainer.agents:
        single = SAC(tiny_env(), config, seed=agent.seed).learn(200)
        assert (single.num_updates, single.current_task, len(single.replay)) == \
               (agent.num_updates, agent.current_task, len(agent.replay))
        # The same replay contents: the same random actions, env streams and (nearly) the same policy.
        np.testing.assert_allclose(single.replay.obs[: len(single.replay)], agent.replay.obs[: len(agent.replay)],
                                   rtol=1e-4, atol=1e-4)
        for name, value in single.actor.state_dict().items():
            torch.testing.assert_close(agent.actor.state_dict()[name], value, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(agent.log_alpha.detach(), single.log_alpha.detach(), rtol=1e-4, atol=1e-5)
        ours, theirs = agent.pop_metrics(), single.pop_metrics()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-4), key
        params[agent.seed] = agent.actor.state_dict()["mean.weight"]
    assert not torch.allclose(params[3], params[4])  # seeds are independent


def test_a_batched_run_keeps_a_fixed_temperature_fixed():
    config = tiny_config("gru", tune_alpha=False, init_log_alpha=-2.0)
    trainer = BatchedSAC([tiny_env(), tiny_env()], config, seeds=[0, 1])
    trainer.learn(60)
    assert all(agent.num_updates > 0 for agent in trainer.agents)
    for agent in trainer.agents:
        assert torch.equal(agent.log_alpha.detach(), torch.full_like(agent.log_alpha.detach(), -2.0))

def test_noise_shapes_cover_the_recurrent_and_transition_losses():
    assert noise_shapes(False, 8, 1, 4) == [(8, 1, 4), (8, 1, 4)]
    assert noise_shapes(True, 8, 5, 4) == [(8, 6, 4)]


# ---------------------------------------------------------------------- scripts/train.py --seeds

TINY = dict(scenario="contenv/Sequence-v0", tasks=("reach-v3", "push-v3"), steps_per_task=100, horizon=25,
            hidden_sizes=(16, 16), batch_size=8, random_steps=20, update_after=20, update_every=10,
            eval_every=50, eval_episodes=1, eval_deterministic_episodes=1, checkpoint_every=50, progress_bar=False)


def _rows(run_dir):
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


def _train_script():
    spec = importlib.util.spec_from_file_location("script_train_batched", ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def batched_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched") / "runs"
    flags = ["--seeds", "0-1", "--run-dir", str(root)]
    for key, value in TINY.items():
        flag = "--" + key.replace("_", "-")
        flags += ([flag] if value else ["--no-" + key.replace("_", "-")]) if isinstance(value, bool) else \
                 [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    assert _train_script().main(flags) == 0
    return root


def test_the_cli_writes_one_single_seed_run_directory_per_seed(batched_run, tmp_path):
    assert sorted(p.name for p in batched_run.iterdir()) == ["seed0", "seed1"]
    for seed in (0, 1):
        run_dir = batched_run / f"seed{seed}"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["seed"] == seed and "seeds" not in config
        assert load_run(run_dir).steps.tolist() == [50, 100, 150, 200]
        checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
        assert checkpoints == {"checkpoint.pt", "agent_after_task_0.pt", "agent_after_task_1.pt"}
        assert SAC.load(run_dir / "checkpoints" / "agent_after_task_1.pt").seed == seed
    # Seed 1 of the batched run logs what a single-seed run of seed 1 logs (up to float rounding).
    single = train(TrainArgs(**TINY, seed=1, run_dir=tmp_path / "single"))
    assert (tmp_path / "single" / "config.json").read_text() == (batched_run / "seed1" / "config.json").read_text() \
        .replace(str(batched_run / "seed1"), str(single))
    for ours, theirs in zip(_rows(batched_run / "seed1"), _rows(single), strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            if key.startswith("plasticity/"):  # not logged for the seeds of a batched run (agents/plasticity.py)
                assert ours[key] == ""
                continue
            if ours[key] or theirs[key]:
                assert float(ours[key]) == pytest.approx(float(theirs[key]), rel=1e-3, abs=1e-3), key


def test_a_stopped_and_resumed_batched_run_equals_an_uninterrupted_one(batched_run, tmp_path):
    args = dict(TINY, seeds="0-1", run_dir=tmp_path / "runs")
    train_seeds(TrainArgs(**args, stop_at_step=125))
    assert load_run(tmp_path / "runs" / "seed0").steps.tolist() == [50, 100]
    train_seeds(TrainArgs(**args, resume=True))
    for seed in (0, 1):
        assert (tmp_path / "runs" / f"seed{seed}" / "progress.csv").read_text() == \
               (batched_run / f"seed{seed}" / "progress.csv").read_text()


@pytest.mark.parametrize("text, message", [("", "no seeds"), ("3-1", "backwards"), ("0,0", "more than once"),
                                           ("a-b", "expected seeds like"), ("-1", "expected seeds like")])
def test_bad_seed_lists_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_seed_lists():
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("2-3, 7") == [2, 3, 7]


@pytest.mark.parametrize("protection", ["ewc", "packnet", "l2+replay"])
def test_other_protections_are_refused_with_a_pointer_to_sweeps(tmp_path, protection):
    with pytest.raises(RunError, match=r"supports the protection 'finetune' only.*sweep"):
        train(TrainArgs(**TINY, seeds="0-1", protection=protection, run_dir=tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="finetune"):
        BatchedSAC([tiny_env()], tiny_config(), seeds=[0], protection=protection)


def test_bad_input_writes_nothing(tmp_path):
    (tmp_path / "runs" / "seed1").mkdir(parents=True)
    (tmp_path / "runs" / "seed1" / "file").write_text("x")
    with pytest.raises(RunError, match="already exists"):
        train(TrainArgs(**TINY, seeds="0-1", run_dir=tmp_path / "runs"))
    assert not (tmp_path / "runs" / "seed0").exists()
    with pytest.raises(RunError, match="backwards"):
        train(TrainArgs(**TINY, seeds="5-2", run_dir=tmp_path / "y"))
    with pytest.raises(ValueError, match="one env per seed"):
        BatchedSAC([tiny_env()], tiny_config(), seeds=[0, 1])
