"""A short continual run that prints per-task success after every task.

Until the learning agent lands, the "agent" is Meta-World's scripted expert of the task
being trained, kept for every later task: a policy that has mastered task i and keeps
using it shows, position by position, the success matrix a continual learner is judged by.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

import contenv
from contenv.scripted import ScriptedMetaWorldPolicy

SCENARIO = "contenv/CW10-v0"
TASKS_SHOWN = 4
EPISODES = 5


def success_rate(env: gym.Env, policy: ScriptedMetaWorldPolicy, episodes: int, seed: int) -> float:
    wins = 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy.act(obs))
            done = terminated or truncated
        wins += info["success"]
    return wins / episodes


def main() -> None:
    start = time.time()
    train_env = gym.make(SCENARIO, steps_per_task=400).unwrapped
    names = train_env.task_names[:TASKS_SHOWN]
    test_envs = [contenv.make_test_env(train_env, i) for i in range(TASKS_SHOWN)]
    print(f"{SCENARIO}: first {TASKS_SHOWN} tasks, scripted expert of the current task, {EPISODES} test episodes each\n")
    print("after task      " + " ".join(f"{n[:12]:>12s}" for n in names))
    for trained in range(TASKS_SHOWN):
        policy = ScriptedMetaWorldPolicy(names[trained])
        row = [success_rate(test_envs[i], policy, EPISODES, seed=100 * i) for i in range(TASKS_SHOWN)]
        print(f"{trained + 1:2d} {names[trained][:12]:12s} " + " ".join(f"{r:12.2f}" for r in row))
    print(f"\ndiagonal = success on the task just learned; off-diagonal = what one expert does on other tasks"
          f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    np.set_printoptions(precision=2)
    main()
