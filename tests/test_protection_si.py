"""Synaptic intelligence (agents/protection/si.py): the path integral against a hand computation on a
quadratic, a broken version of it, which gradient it reads, consolidation, bad input, exact checkpoint
resume and training on every trunk."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from protection_helpers import make_agent, registered_protections, tiny_config, tiny_env  # noqa: F401

from agents.protection import make_protection
from agents.protection.common import shared_actor_names
from agents.protection.si import SI
from agents.sac import SAC

LR, MOMENTUM, STEPS, XI = 0.05, 0.9, 30, 1e-3


def quadratic(seed=0, num_tasks=2):
    """Per shared weight k: curvature a_k > 0 and target t_k of L = 0.5 sum_k a_k (theta_k - t_k)^2."""
    agent = make_agent(num_tasks=num_tasks, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    weights = dict(agent.actor.named_parameters())
    problem = {n: (torch.rand(weights[n].shape, generator=generator) * 4 + 0.5,
                   torch.randn(weights[n].shape, generator=generator)) for n in shared_actor_names(agent)}
    return agent, problem


def loss_of(agent, problem):
    weights = dict(agent.actor.named_parameters())
    return sum(0.5 * (a * (weights[n] - t).square()).sum() for n, (a, t) in problem.items())


def train_task(agent, problem, method, steps=STEPS):
    """Heavy-ball SGD on the quadratic, calling the hooks the agent calls around each step."""
    optimizer = torch.optim.SGD(agent.actor.parameters(), lr=LR, momentum=MOMENTUM)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of(agent, problem)
        penalty = method.loss(agent, None)
        (loss if penalty is None else loss + penalty).backward()
        method.after_backward(agent)
        optimizer.step()
        method.after_step(agent)


def by_hand(theta0, a, t, steps=STEPS):
    """The same heavy-ball run written out in float64, and SI's importance from its definition:
    omega = sum over steps of -g * (theta_new - theta); Omega = max(0, omega / ((theta_end - theta_start)^2 + xi))."""
    theta, velocity = theta0.astype(np.float64), np.zeros_like(theta0, dtype=np.float64)
    omega = uphill = 0.0
    for _ in range(steps):
        g = a * (theta - t)
        velocity = MOMENTUM * velocity + g
        new = theta - LR * velocity
        omega = omega - g * (new - theta)
        uphill = uphill + np.maximum(0.0, g * (new - theta))  # steps that raised the loss
        theta = new
    return np.maximum(0.0, omega / ((theta - theta0) ** 2 + XI)), uphill


@pytest.mark.parametrize("broken", [False, True])
def test_importance_is_the_path_integral_of_a_quadratic_by_hand(broken, monkeypatch):
    """With momentum the run overshoots, so some steps go uphill (-g * delta < 0). A version that
    ignores that sign (|g * delta|) counts them as importance, and disagrees with the hand computation."""
    if broken:
        def after_step(self, agent):
            gradients, before = self._pending
            weights = dict(agent.actor.named_parameters())
            for name, g in gradients.items():
                self.running[name] += (g * (weights[name].detach() - before[name])).abs()
            self._pending = None

        monkeypatch.setattr(SI, "after_step", after_step)
    agent, problem = quadratic()
    method = SI(xi=XI)
    method.on_task_start(agent, 0)
    theta0 = {n: p.detach().double().numpy().copy() for n, p in agent.actor.named_parameters() if n in problem}
    train_task(agent, problem, method)
    method.on_task_end(agent, 0)
    expected, uphill = {}, []
    for n, (a, t) in problem.items():
        expected[n], climbed = by_hand(theta0[n], a.double().numpy(), t.double().numpy())
        uphill.append(climbed.ravel())
    assert np.concatenate(uphill).max() > 0.1  # overshooting steps went uphill: the case that tells
    matches = all(np.allclose(method.importance[n].double().numpy(), expected[n], rtol=1e-4, atol=1e-6)
                  for n in problem)
    assert matches is (not broken)


def test_the_task_gradient_leaves_out_the_penalty_and_total_keeps_it():
    agent, problem = quadratic(seed=1)
    methods = {"task": SI(coefficient=3.0), "total": SI(coefficient=3.0, gradient="total")}
    for method in methods.values():
        method.on_task_start(agent, 0)
        train_task(agent, problem, method, steps=5)
        method.on_task_end(agent, 0)
    with torch.no_grad():  # off the anchor, so the penalty has a gradient
        for p in agent.actor.parameters():
            p.add_(0.1)
    task_gradient = torch.autograd.grad(loss_of(agent, problem), [dict(agent.actor.named_parameters())[n]
                                                                 for n in problem])
    for kind, method in methods.items():
        agent.actor.zero_grad()
        (loss_of(agent, problem) + method.loss(agent, None)).backward()
        method.after_backward(agent)
        recorded = method._pending[0]
        for n, g in zip(problem, task_gradient):
            same = torch.allclose(recorded[n], g, atol=1e-5)
            assert same is (kind == "task"), (kind, n)


def test_importances_add_up_over_tasks_anchor_at_the_latest_and_skip_the_last_task():
    agent, problem = quadratic(seed=2, num_tasks=3)
    method = SI()
    importances = []
    for task in range(3):
        method.on_task_start(agent, task)
        train_task(agent, {n: (a, t + task) for n, (a, t) in problem.items()}, method, steps=10)
        before = copy.deepcopy(method.importance)
        method.on_task_end(agent, task)
        importances.append({n: method.importance[n] - before.get(n, 0.0) for n in method.importance})
    assert method.consolidated == [0, 1]  # the last task has nothing after it to protect it from
    assert all(not torch.equal(importances[0][n], torch.zeros_like(importances[0][n])) for n in problem)
    assert all(bool((w >= 0).all()) for w in method.importance.values())
    weights = dict(agent.actor.named_parameters())
    assert sorted(method.anchor) == sorted(problem) and "mean.weight" not in method.anchor  # heads are per task
    assert not torch.equal(method.anchor["body.layers.0.weight"], weights["body.layers.0.weight"])  # task 1's end
    assert method.loss(agent, None).item() > 0


@pytest.mark.parametrize("kwargs,message", [({"xi": 0.0}, "xi must be positive"), ({"gradient": "sign"}, "task"),
                                            ({"coefficient": -1.0}, ">= 0")])
def test_bad_input_is_refused_with_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_protection("si", **kwargs)


def test_si_is_an_importance_regulariser_for_composites():
    with pytest.raises(ValueError, match="importance regularisers"):
        make_protection("si+ewc")
    assert make_protection("replay+si").names == ["replay", "si"]


@pytest.mark.parametrize("trunk", ["mlp", "gru", "lstm", "mingru"])
def test_training_with_si_runs_on_every_trunk(trunk):
    agent = SAC(tiny_env(), tiny_config(trunk), protection=make_protection("si"), seed=0)
    agent.learn(80)
    method = agent.protection
    assert agent.current_task == 1 and method.consolidated == [0]
    assert all(bool(torch.isfinite(w).all()) and bool((w >= 0).all()) for w in method.importance.values())
    assert max(float(w.max()) for w in method.importance.values()) > 0  # the path integral saw the steps
    metrics = agent.pop_metrics()
    assert metrics["train/protection_loss"] > 0 and all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("trunk", ["mlp", "gru"])
def test_a_checkpoint_resumes_exactly(trunk, tmp_path):
    from agents.training.checkpoint import load_checkpoint, save_checkpoint

    def agent():
        return SAC(tiny_env(steps_per_task=60), tiny_config(trunk), protection=make_protection("si"), seed=0)

    first = agent()
    first.learn(40)  # mid task 0: a running path integral, nothing consolidated yet
    while first._obs is not None:  # checkpoints are taken between episodes
        first.learn(1)
    rest = 120 - first.num_timesteps
    save_checkpoint(tmp_path / "checkpoint.pt", first)
    first.learn(rest)
    second = agent()
    load_checkpoint(tmp_path / "checkpoint.pt", second)
    second.learn(rest)
    assert first.protection.consolidated == second.protection.consolidated == [0]
    for (n, a), b in zip(first.actor.named_parameters(), second.actor.parameters()):
        assert torch.equal(a, b), n
    for a, b in zip(first.critic.parameters(), second.critic.parameters()):
        assert torch.equal(a, b)
    for n, w in first.protection.importance.items():
        assert torch.equal(w, second.protection.importance[n]), n
