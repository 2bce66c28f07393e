"""contenv: a Gymnasium suite for continual reinforcement learning.

Example:
    >>> import gymnasium as gym
    >>> import contenv
    >>> env = gym.make("contenv/CW10-v0", steps_per_task=1000)
    >>> env.unwrapped.task_names[:3]
    ['hammer-v3', 'push-wall-v3', 'faucet-close-v3']
"""

from contenv.continual import BudgetExhaustedError, ContinualEnv
from contenv.position_env import PositionEnv, PositionSpec, make_test_env, position_specs
from contenv.registration import register_scenarios, registered_ids

__all__ = [
    "BudgetExhaustedError",
    "ContinualEnv",
    "PositionEnv",
    "PositionSpec",
    "make_test_env",
    "position_specs",
    "register_scenarios",
    "registered_ids",
]

__version__ = "0.1.0"

register_scenarios()
