"""Report which CW10 tasks need their goal remembered (the Meta-World memory variants).

For every CW10 task with the goal visible only in the first ``--visible-steps`` steps:
success of the scripted expert on the masked observation vs the expert that remembers the
first goal it saw, over ``--episodes`` seeded episodes.

    python scripts/goal_memory_report.py [--visible-steps 1] [--episodes 20]
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym

import contenv
from contenv.evaluation import evaluate
from contenv.goal_memory import GoalRememberingScripted, MaskedScripted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visible-steps", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    env = gym.make("contenv/CWMemory10-v0", visible_steps=args.visible_steps, steps_per_task=1)
    specs = contenv.position_specs(env)
    kw = dict(episodes=args.episodes, deterministic_episodes=0, num_workers=args.workers, seed=0)
    masked = evaluate(MaskedScripted(specs), specs, **kw).stochastic.success
    remembering = evaluate(GoalRememberingScripted(specs), specs, **kw).stochastic.success
    print(f"goal visible for the first {args.visible_steps} step(s); {args.episodes} episodes per task\n")
    print("| task | masked expert | remembering expert | needs the goal |\n|---|---|---|---|")
    for spec, m, r in zip(specs, masked, remembering):
        needs = "yes" if r - m >= 0.3 else "no"
        print(f"| {spec.task_name.split('(')[0]} | {m:.2f} | {r:.2f} | {needs} |")


if __name__ == "__main__":
    main()
