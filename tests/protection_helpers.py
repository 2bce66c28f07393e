"""Shared pieces of the protection tests: tiny agents, replay filling, the registry fixture.

The methods of issue 6 are registered here for the tests (the lead adds them to
``agents/protection/__init__.py``); the fixture restores the registry afterwards.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import contenv  # noqa: F401  (registers the env ids)
from agents.protection import PROTECTIONS, register_protection
from agents.sac import SAC, SACConfig, SpaceSpec

ENTRY_POINTS = {
    "l2": "agents.protection.l2:L2",
    "ewc": "agents.protection.ewc:EWC",
    "online-ewc": "agents.protection.ewc:OnlineEWC",
    "mas": "agents.protection.mas:MAS",
    "agem": "agents.protection.agem:AGEM",
    "replay": "agents.protection.replay:Replay",
    "composite": "agents.protection.compose:Composite",
}
SMALL = {"batches": 2, "batch_size": 16}  # Fisher / MAS rows in tests


@pytest.fixture(autouse=True, scope="module")
def registered_protections():
    saved, threads = dict(PROTECTIONS), torch.get_num_threads()
    for name, entry_point in ENTRY_POINTS.items():
        register_protection(name, entry_point)
    torch.set_num_threads(1)  # tiny networks: threads only add overhead on a shared machine
    yield
    PROTECTIONS.clear()
    PROTECTIONS.update(saved)
    torch.set_num_threads(threads)


def make_agent(trunk="mlp", num_tasks=2, onehot=True, protection=None, seed=0, body="cw"):
    spec = SpaceSpec(obs_dim=3 + num_tasks * onehot, task_width=3, num_tasks=num_tasks, action_dim=2, onehot=onehot)
    config = SACConfig(trunk=trunk, hidden_sizes=(8, 8), rnn_size=4, batch_size=8, seq_len=3, body=body)
    return SAC(config=config, spec=spec, protection=protection, seed=seed)


def fill(agent, task, steps=40, seed=0):
    rng = np.random.default_rng(seed + 100 * task)
    for t in range(steps):
        obs, next_obs = rng.random(agent.spec.obs_dim), rng.random(agent.spec.obs_dim)
        agent.replay.add(obs, rng.uniform(-1, 1, 2), rng.random(), next_obs, False, (t + 1) % 5 == 0, task)


def tiny_env(tasks=("repeat-first(d=2)", "copy(p=1,i=1)"), steps_per_task=40):
    return gym.make("contenv/Sequence-v0", tasks=list(tasks), steps_per_task=steps_per_task)


def tiny_config(trunk, **overrides):
    values = dict(trunk=trunk, hidden_sizes=(16, 16), rnn_size=8, batch_size=8, seq_len=3, random_steps=8,
                  update_after=8, update_every=8, gradient_steps=2)
    values.update(overrides)
    return SACConfig(**values)
