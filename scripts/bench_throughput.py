"""Training throughput: our SAC vs Stable-Baselines3 SAC on the same Meta-World task.

Same task (reach-v3 through contenv), same network sizes (4 x 256 actor and critics),
batch 128, the CW update ratio (50 updates every 50 steps), same device and torch
threads. Both are first run past their random phase, then timed in interleaved chunks
(ours, SB3, ours, SB3, ...), so load changes on a shared machine hit both alike. The last
line is ``ratio_vs_sb3: X`` (our env steps per second / SB3's).

With ``--recurrent``, our GRU agent is also timed against sb3-contrib's RecurrentPPO
(LSTM 256) for reference: PPO does far fewer updates per step, so that ratio is not a
like-for-like comparison.

    python scripts/bench_throughput.py [--chunks 4] [--chunk-steps 500] [--device cpu] [--recurrent]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import contenv  # noqa: F401  (registers the ids)

TASK = "reach-v3"
HIDDEN = (256, 256, 256, 256)


def make_env() -> gym.Env:
    return gym.make("contenv/Sequence-v0", tasks=[TASK], steps_per_task=10**8)


def ours(trunk: str, device: str, warmup: int):
    from agents.sac import SAC, SACConfig

    config = SACConfig(trunk=trunk, hidden_sizes=HIDDEN, batch_size=128, random_steps=warmup, update_after=warmup,
                       update_every=50, replay_size=200_000)
    return SAC(make_env(), config, seed=0, device=device)


def sb3_sac(device: str, warmup: int):
    from stable_baselines3 import SAC

    return SAC("MlpPolicy", make_env(), learning_starts=warmup, batch_size=128, train_freq=50, gradient_steps=50,
               buffer_size=200_000, policy_kwargs={"net_arch": list(HIDDEN)}, seed=0, device=device)


def sb3_recurrent_ppo(device: str):
    from sb3_contrib import RecurrentPPO

    return RecurrentPPO("MlpLstmPolicy", make_env(), n_steps=512, batch_size=128, seed=0, device=device,
                        policy_kwargs={"lstm_hidden_size": 256, "net_arch": [256, 256]})


def timed(learn, steps: int) -> float:
    start = time.perf_counter()
    learn(steps)
    return steps / (time.perf_counter() - start)


def compare(label: str, ours_learn, theirs_learn, args: argparse.Namespace, theirs_name: str) -> float:
    ours_sps, theirs_sps = [], []
    for _ in range(args.chunks):
        ours_sps.append(timed(ours_learn, args.chunk_steps))
        theirs_sps.append(timed(theirs_learn, args.chunk_steps))
    mine, theirs = float(np.median(ours_sps)), float(np.median(theirs_sps))
    print(f"{label}: contenv {mine:7.1f} steps/s   {theirs_name} {theirs:7.1f} steps/s   "
          f"(median of {args.chunks} interleaved chunks of {args.chunk_steps} steps)")
    return mine / theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks per agent (interleaved)")
    parser.add_argument("--chunk-steps", type=int, default=500, help="env steps per timed chunk")
    parser.add_argument("--warmup", type=int, default=1000, help="random steps before updates start (both agents)")
    parser.add_argument("--device", default="cpu", help="torch device for both agents")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both agents")
    parser.add_argument("--recurrent", action="store_true", help="also time our GRU agent vs RecurrentPPO")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{TASK}, 4x256 networks, batch 128, 50 updates every 50 steps, device {args.device}, "
          f"{args.threads} torch thread(s), torch {torch.__version__}")

    mlp, sb3 = ours("mlp", args.device, args.warmup), sb3_sac(args.device, args.warmup)
    mlp.learn(args.warmup + 50)  # past the random phase: every timed chunk includes updates
    sb3.learn(args.warmup + 50)
    ratio = compare("MLP SAC", mlp.learn, lambda n: sb3.learn(n, reset_num_timesteps=False), args, "SB3 SAC")

    if args.recurrent:
        try:
            ppo = sb3_recurrent_ppo(args.device)
        except ImportError:
            print("GRU vs RecurrentPPO: skipped (pip install sb3-contrib)")
        else:
            gru = ours("gru", args.device, args.warmup)
            gru.learn(args.warmup + 50)
            ppo.learn(512)
            gru_ratio = compare("GRU SAC vs RecurrentPPO (reference only)", gru.learn,
                                lambda n: ppo.learn(n, reset_num_timesteps=False), args, "RecurrentPPO")
            print(f"ratio_gru_vs_recurrent_ppo: {gru_ratio:.2f}")
    print(f"ratio_vs_sb3: {ratio:.2f}")


if __name__ == "__main__":
    main()
