"""Batched evaluator vs the plain sequential loop on the CW10 test envs.

Both run Meta-World's scripted experts on every CW10 position, the same seeded episodes,
measured in one run. The batched evaluator keeps its envs and workers between calls (as
it does during training), so its first call (which builds the envs) is reported apart.

    python scripts/bench_evaluator.py [--episodes 10] [--workers 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import contenv
from contenv.evaluation import Evaluator, ScriptedPolicy, evaluate_sequential


class MLPPolicy:
    """A CW-sized actor (4 x 256, random weights): the per-call cost of a real agent."""

    def __init__(self, obs_dim: int) -> None:
        import torch

        torch.manual_seed(0)
        layers, width = [], obs_dim
        for _ in range(4):
            layers += [torch.nn.Linear(width, 256), torch.nn.LeakyReLU()]
            width = 256
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(256, 4), torch.nn.Tanh())
        self.torch = torch

    def act(self, obs, state, episode_start, deterministic, positions, rewards=None):
        with self.torch.no_grad():
            return self.net(self.torch.as_tensor(obs)).numpy(), state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="stochastic episodes per position (CW: 10)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="evaluation worker processes")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls of each")
    args = parser.parse_args()

    specs = contenv.position_specs("contenv/CW10-v0")
    episodes = len(specs) * args.episodes
    for label, policy in (("scripted experts", ScriptedPolicy([s.task_name for s in specs])),
                          ("4x256 MLP actor", MLPPolicy(specs[0].layout.width))):
        print(f"\nCW10 test envs, {label}, {args.episodes} episodes x {len(specs)} positions = {episodes} episodes per call")
        compare(specs, policy, episodes, args)


def compare(specs, policy, episodes: int, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    evaluator = Evaluator(specs, episodes=args.episodes, deterministic_episodes=0, num_workers=args.workers)
    evaluator.evaluate(policy, seed=0)
    print(f"batched first call (builds {evaluator._pool.num_slots} envs in {args.workers} workers): {time.perf_counter() - start:.1f} s")

    batched, sequential = [], []
    for repeat in range(args.repeats):  # interleaved, so load changes hit both alike
        start = time.perf_counter()
        b = evaluator.evaluate(policy, seed=repeat + 1)
        batched.append(episodes / (time.perf_counter() - start))
        start = time.perf_counter()
        s = evaluate_sequential(policy, specs, episodes=args.episodes, deterministic_episodes=0, seed=repeat + 1)
        sequential.append(episodes / (time.perf_counter() - start))
        assert np.array_equal(b.stochastic.success, s.stochastic.success), "batched and sequential disagree"
    evaluator.close()
    print(f"mean success {b.stochastic.success.mean():.3f} (identical in both)")
    print(f"sequential loop: {np.mean(sequential):.2f} episodes/s")
    print(f"batched evaluator: {np.mean(batched):.2f} episodes/s")
    print(f"ratio_batched_vs_sequential: {np.mean(batched) / np.mean(sequential):.2f}")



if __name__ == "__main__":
    main()
