"""Seed batching throughput: aggregate env steps per second of K seeds trained in one process.

The MLP agent (Continual World: 4 x 256 actor and critics, batch 128, 50 updates every
50 steps) on a Meta-World task, K seeds stacked in one :class:`agents.batched.BatchedSAC`.
Each K first runs past its random phase (``--warmup`` steps, then one untimed update
round), then ``--steps`` steps of the update phase are timed. One line per K:
aggregate steps per second (K x the env steps of one seed, per second) and its ratio to
K times the K=1 figure (1.0: batching K seeds costs nothing over one; the target
on a GPU is >= 0.7).

    python scripts/bench_seed_batching.py [--ks 1 2 4 8 16] [--steps 200] [--device cuda] [--torch-threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch

import contenv  # noqa: F401  (registers the ids)
from agents.batched import BatchedSAC
from agents.sac import SACConfig

HIDDEN = (256, 256, 256, 256)


def make_env(task: str) -> gym.Env:
    return gym.make("contenv/Sequence-v0", tasks=[task], steps_per_task=10**8).unwrapped


def steps_per_second(k: int, args: argparse.Namespace) -> float:
    """Aggregate env steps per second of ``k`` stacked seeds in the update phase."""
    config = SACConfig(hidden_sizes=HIDDEN, batch_size=128, random_steps=args.warmup, update_after=args.warmup,
                       update_every=50, replay_size=args.replay_size)
    trainer = BatchedSAC([make_env(args.task) for _ in range(k)], config, seeds=range(k), device=args.device,
                         compile=args.compile)
    trainer.learn(args.warmup + 50)  # random phase and one update round (first-call overheads) untimed
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    trainer.learn(args.steps)
    sync()
    return k * args.steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="numbers of stacked seeds")
    parser.add_argument("--steps", type=int, default=200, help="timed env steps per seed (a multiple of 50)")
    parser.add_argument("--warmup", type=int, default=200, help="random steps before the updates start")
    parser.add_argument("--task", default="reach-v3", help="Meta-World task")
    parser.add_argument("--device", default="cpu", help="torch device (cuda on a GPU machine)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--replay-size", type=int, default=100_000, help="replay capacity per seed (memory only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the batched loss (GPU experiment)")
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.steps % 50:
        parser.error("--steps must be a positive multiple of 50 (whole update rounds)")
    torch.set_num_threads(args.torch_threads)
    print(f"device={args.device} compile={args.compile} torch_threads={args.torch_threads} task={args.task} hidden={HIDDEN} batch=128 "
          f"updates=50/50 steps, timed steps per seed={args.steps}")
    first_per_seed = None  # the first K's per-seed rate (K=1 unless --ks starts elsewhere)
    for k in args.ks:
        rate = steps_per_second(k, args)
        first_per_seed = rate / k if first_per_seed is None else first_per_seed
        print(f"K={k:<3d} aggregate_steps_per_second={rate:9.1f}  per_seed={rate / k:8.1f}  "
              f"ratio_vs_K_x_K{args.ks[0]}={rate / (k * first_per_seed):.2f}", flush=True)

if __name__ == "__main__":
    main()
