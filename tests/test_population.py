"""Populations (agents/population.py, contenv train --seeds): member k equals the single run of seed k."""

import csv
import functools
import importlib.util
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import contenv  # noqa: F401 - registers the scenarios
from agents.population import Population, check_protection, parse_seeds
from agents.training.population_run import train_seeds
from agents.protection import make_protection
from agents.training.run import RunError, TrainArgs, train
from agents.sac import SAC, SACConfig
from agents.nets.stacked import clip_per_member
from contenv.evaluation.rundir import load_run

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
STEPS = 200  # two tasks of 100 steps: a task change (hooks, empty replay, optimizer reset), 160 updates
# Member k against the single run of seed k after STEPS steps (160 updates): the batched matrix
# products sum in another order than the single run's, so weights agree to float rounding grown
# over 160 updates (measured: at most 5e-5, GRU with replay; 1e-6 or less for most methods).
WEIGHT_TOL = dict(rtol=1e-3, atol=1e-4)

# Settings that make every hook act within STEPS (the defaults are sized for 1M-step tasks).
METHOD_KWARGS = {
    "ewc": dict(batches=2, batch_size=16),
    "online-ewc": dict(batches=2, batch_size=16),
    "mas": dict(batches=2, batch_size=16),
    "replay": dict(mode="bc", memory_per_task=50, batch_size=8),
    "agem": dict(memory_per_task=50, episodic_batch_size=8),
    "clonex": dict(memory_per_task=50, batch_size=8),
    "cbp": dict(rate=0.05, maturity=5),
    "redo": dict(every=10, tau=0.5),
    "shrink-perturb": dict(every=20),
    "l2-init": dict(coefficient=1.0),
}


def tiny_env():
    return gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=100, horizon=25).unwrapped


def memory_env():
    """Two memory tasks: their observations are exact (no contact dynamics to amplify a rounding
    difference in an action), so a method's runs can be compared step by step for longer."""
    return gym.make("contenv/Sequence-v0", tasks=["repeat-first(d=3)", "copy(p=1,i=1)"], steps_per_task=100).unwrapped


ENVS = {"metaworld": tiny_env, "memory": memory_env}


def tiny_config(trunk="mlp", **overrides):
    return SACConfig(**{**dict(trunk=trunk, hidden_sizes=(16, 16), rnn_size=8, seq_len=5, batch_size=8,
                               random_steps=20, update_after=20, update_every=10), **overrides})


def method(name):
    return make_protection(name, **METHOD_KWARGS.get(name, {}))


# Adam divides by sqrt(v) + eps: a gradient entry near zero (BC at its minimum, right after a task
# change, when the moments restart) is normalised to a step of about lr whatever its rounding, so
# with Keras' eps of 1e-7 two runs that differ by float rounding differ by up to a few lr per entry
# after one update (measured: 1.7e-3, ClonEx/BC on the MLP). The method tests use eps = 1e-3, where
# such entries take steps proportional to their (tiny) gradient, to compare the runs closely.
METHOD_CONFIG = dict(adam_eps=1e-3)


@functools.lru_cache(maxsize=None)
def single_run(trunk, name, seed, env="metaworld"):
    config = tiny_config(trunk, **(METHOD_CONFIG if env == "memory" else {}))
    return SAC(ENVS[env](), config, protection=method(name), seed=seed).learn(STEPS)


def assert_member_equals_single(member, single):
    assert (single.num_updates, single.current_task, len(single.replay)) == \
           (member.num_updates, member.current_task, len(member.replay))
    np.testing.assert_allclose(single.replay.obs[: len(single.replay)], member.replay.obs[: len(member.replay)],
                               rtol=1e-4, atol=1e-4)
    for net in ("actor", "critic", "target_critic"):
        for name, value in getattr(single, net).state_dict().items():
            torch.testing.assert_close(getattr(member, net).state_dict()[name], value, **WEIGHT_TOL)
    torch.testing.assert_close(member.log_alpha.detach(), single.log_alpha.detach(), rtol=1e-4, atol=1e-5)
    ours, theirs = member.pop_metrics(), single.pop_metrics()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-4), key
    return ours


def moved_from_finetune(agent, trunk):
    plain = single_run(trunk, "finetune", agent.seed, "memory")
    return max((p.detach() - plain.actor.get_parameter(n).detach()).abs().max().item()
               for n, p in agent.actor.named_parameters())


# ---------------------------------------------------------------------- member k == the single run of seed k


@pytest.mark.parametrize("trunk", ["mlp", "gru", "lstm", "mingru"])
def test_each_member_reproduces_its_single_run(trunk):
    population = Population([tiny_env(), tiny_env()], tiny_config(trunk), seeds=[3, 4])
    population.learn(STEPS)
    for member in population.members:
        assert_member_equals_single(member, single_run(trunk, "finetune", member.seed))
    a, b = (m.actor.state_dict()["mean.weight"] for m in population.members)
    assert not torch.allclose(a, b)  # members are independent


POPULATION_METHODS = ["l2", "ewc", "online-ewc", "mas", "si", "replay", "agem", "clonex", "cbp", "shrink-perturb",
                      "l2-init", "redo", "reset-last", "replay+ewc", "cbp+l2-init"]


@pytest.mark.parametrize("trunk, name", [("mlp", m) for m in POPULATION_METHODS]
                         + [("gru", m) for m in ("ewc", "replay", "cbp", "clonex")])
def test_each_member_of_a_protected_population_reproduces_its_single_run(trunk, name):
    """Every method a population trains: the hooks act (the weights leave fine-tuning's) and
    each member still equals its single run."""
    population = Population([memory_env(), memory_env()], tiny_config(trunk, **METHOD_CONFIG), seeds=[3, 4],
                            protection=[method(name), method(name)])
    population.learn(STEPS)
    for member in population.members:
        single = single_run(trunk, name, member.seed, "memory")
        metrics = assert_member_equals_single(member, single)
        assert moved_from_finetune(single, trunk) > 1e-4, f"{name} did not change the run: the test proves nothing"
        if name in ("l2", "ewc", "online-ewc", "mas", "si", "l2-init", "replay+ewc"):
            assert metrics["train/protection_loss"] > 0


def test_a_weight_penalty_runs_batched_with_a_coefficient_per_member():
    """L2/EWC/MAS run as one stacked penalty; members may differ by coefficient (a sweep)."""
    from agents.population import StackedPenalty

    coefficients = [1.0, 100.0]
    with pytest.raises(ValueError, match="more than once"):  # one seed twice is refused
        Population([tiny_env(), tiny_env()], tiny_config(), seeds=[3, 3])
    population = Population([tiny_env(), tiny_env()], tiny_config(), seeds=[3, 4],
                            protection=[make_protection("l2", coefficient=c) for c in coefficients])
    assert isinstance(population._penalty, StackedPenalty)
    population.learn(STEPS)
    for member, c in zip(population.members, coefficients):
        single = SAC(tiny_env(), tiny_config(), protection=make_protection("l2", coefficient=c), seed=member.seed)
        assert_member_equals_single(member, single.learn(STEPS))


@pytest.mark.parametrize("name", ["hnet", "vcl", "packnet", "replay+packnet"])
def test_methods_a_population_cannot_run_are_refused_with_the_reason(name):
    with pytest.raises(ValueError, match="cannot train .* one seed per process"):
        check_protection(name)
    with pytest.raises(ValueError, match="cannot train"):
        Population([tiny_env(), tiny_env()], tiny_config(), seeds=[0, 1], protection=name)


def test_one_adam_over_stacked_tensors_equals_an_adam_per_member():
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


def test_gradient_clipping_is_per_member_like_clip_grad_norm():
    torch.manual_seed(0)
    stacked = [torch.zeros(3, 4, 5, requires_grad=True), torch.zeros(3, 5, requires_grad=True)]
    for p, scale in zip(stacked, (1.0, 0.01)):
        p.grad = torch.randn(p.shape) * scale
    singles = [[torch.zeros(p.shape[1:], requires_grad=True) for p in stacked] for _ in range(3)]
    for k, params in enumerate(singles):
        for p, s in zip(params, stacked):
            p.grad = s.grad[k].clone()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
    clip_per_member(stacked, 0.5)
    for k, params in enumerate(singles):
        for p, s in zip(params, stacked):
            torch.testing.assert_close(s.grad[k], p.grad)


def test_a_population_keeps_a_fixed_temperature_fixed():
    config = tiny_config("gru", tune_alpha=False, init_log_alpha=-2.0)
    population = Population([tiny_env(), tiny_env()], config, seeds=[0, 1])
    population.learn(60)
    assert all(member.num_updates > 0 for member in population.members)
    for member in population.members:
        assert torch.equal(member.log_alpha.detach(), torch.full_like(member.log_alpha.detach(), -2.0))


def test_members_that_cannot_run_in_lockstep_are_refused():
    other = gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=50, horizon=25).unwrapped
    with pytest.raises(ValueError, match="same steps_per_task"):
        Population([tiny_env(), other], tiny_config(), seeds=[0, 1])
    wider = gym.make("contenv/Sequence-v0", tasks=["copy(p=1,i=1)"], steps_per_task=100).unwrapped
    with pytest.raises(ValueError, match="same spaces"):
        Population([tiny_env(), wider], tiny_config(), seeds=[0, 1])
    with pytest.raises(ValueError, match="2 protection objects, got 1"):
        Population([tiny_env(), tiny_env()], tiny_config(), seeds=[0, 1], protection=[method("l2")])
    with pytest.raises(ValueError, match="one method"):
        Population([tiny_env(), tiny_env()], tiny_config(), seeds=[0, 1], protection=[method("l2"), method("ewc")])
    with pytest.raises(ValueError, match="no seeds"):
        Population([], tiny_config(), seeds=[])


# ---------------------------------------------------------------------- scripts/train.py --seeds

TINY = dict(scenario="contenv/Sequence-v0", tasks=("reach-v3", "push-v3"), steps_per_task=100, horizon=25,
            hidden_sizes=(16, 16), batch_size=8, random_steps=20, update_after=20, update_every=10,
            eval_every=50, eval_episodes=1, eval_deterministic_episodes=1, checkpoint_every=50, progress_bar=False)


def _rows(run_dir):
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


def _train_script():
    spec = importlib.util.spec_from_file_location("script_train_population", ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def batched_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("population") / "runs"
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


@pytest.mark.parametrize("protection", ["packnet", "hnet", "replay+packnet"])
def test_methods_a_population_cannot_run_are_refused_before_anything_is_written(tmp_path, protection):
    with pytest.raises(RunError, match=r"cannot train.*one seed per process"):
        train(TrainArgs(**TINY, seeds="0-1", protection=protection, run_dir=tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_the_cli_trains_a_protected_population_with_its_kwargs(tmp_path):
    args = dict(TINY, seeds="0-1", protection="ewc", protection_kwargs='{"coefficient": 50.0, "batches": 2, "batch_size": 16}')
    root = train(TrainArgs(**args, run_dir=tmp_path / "runs"))
    single = train(TrainArgs(**{**args, "seeds": None}, seed=1, run_dir=tmp_path / "single"))
    assert json.loads((root / "seed1" / "config.json").read_text())["protection_kwargs"]["coefficient"] == 50.0
    rows, theirs = _rows(root / "seed1"), _rows(single)
    assert float(rows[-1]["train/protection_loss"]) > 0
    for ours, other in zip(rows, theirs, strict=True):
        for key in ours:
            if ours[key] or other[key]:
                assert float(ours[key]) == pytest.approx(float(other[key]), rel=1e-3, abs=1e-3), key


def test_bad_input_writes_nothing(tmp_path):
    (tmp_path / "runs" / "seed1").mkdir(parents=True)
    (tmp_path / "runs" / "seed1" / "file").write_text("x")
    with pytest.raises(RunError, match="already exists"):
        train(TrainArgs(**TINY, seeds="0-1", run_dir=tmp_path / "runs"))
    assert not (tmp_path / "runs" / "seed0").exists()
    with pytest.raises(RunError, match="backwards"):
        train(TrainArgs(**TINY, seeds="5-2", run_dir=tmp_path / "y"))
    with pytest.raises(ValueError, match="one env per seed"):
        Population([tiny_env()], tiny_config(), seeds=[0, 1])


def test_a_non_finite_member_stops_alone_and_the_others_go_on():
    """An infinite L2 coefficient makes seed 3's loss NaN once its anchor is set (inf * 0); seed 4 goes on
    and still equals its single run; seed 3 keeps the weights of its last finite update."""
    protections = [make_protection("l2", coefficient=float("inf")), make_protection("l2", coefficient=1.0)]
    population = Population([memory_env(), memory_env()], tiny_config(**METHOD_CONFIG), seeds=[3, 4],
                            protection=protections)
    with pytest.warns(UserWarning, match="seed 3: update .* non-finite loss"):
        population.learn(STEPS)
    assert [m.seed for m in population.members] == [4] and [m.seed for m in population.failed] == [3]
    stopped = population.failed[0]
    assert "non-finite loss" in str(stopped.failure) and stopped.num_timesteps == 100 + 21  # its first task-1 update
    assert all(torch.isfinite(p).all() for p in stopped.actor.parameters())
    single = SAC(memory_env(), tiny_config(**METHOD_CONFIG), protection=make_protection("l2", coefficient=1.0), seed=4)
    assert_member_equals_single(population.members[0], single.learn(STEPS))


def test_a_population_whose_replays_do_not_fit_is_refused_before_it_starts():
    from agents.population import check_memory

    config = tiny_config(replay_size=10**7)  # ~0.4 GB of transitions each (allocated lazily)
    with pytest.raises(MemoryError, match=r"population of 64 members needs about .* MiB for its replays"):
        Population([tiny_env() for _ in range(64)], config, seeds=range(64))
    member = SAC(tiny_env(), config)
    check_memory(member, 2, available=10**12)  # fits: no error
    with pytest.raises(MemoryError, match="--population-size"):
        check_memory(member, 2, available=10**6)


def test_a_killed_protected_population_resumes_exactly(tmp_path):
    """EWC (its anchor and Fisher in each member's checkpoint) across a stop in the second task."""
    args = dict(TINY, seeds="0-1", protection="ewc", protection_kwargs='{"coefficient": 50.0, "batches": 2, "batch_size": 16}')
    whole = train_seeds(TrainArgs(**args, run_dir=tmp_path / "whole"))
    train_seeds(TrainArgs(**args, run_dir=tmp_path / "cut", stop_at_step=150))
    assert load_run(tmp_path / "cut" / "seed1").steps.tolist() == [50, 100, 150]
    train_seeds(TrainArgs(**args, run_dir=tmp_path / "cut", resume=True))
    for seed in (0, 1):
        assert (tmp_path / "cut" / f"seed{seed}" / "progress.csv").read_text() == \
               (whole / f"seed{seed}" / "progress.csv").read_text()
