"""Any Gymnasium agent can use the scenarios: Stable-Baselines3 SAC learns on CW10 directly."""

import gymnasium as gym
import numpy as np

import contenv  # noqa: F401


def test_sb3_sac_learns_on_cw10_across_a_task_switch():
    from stable_baselines3 import SAC

    env = gym.make("contenv/CW10-v0", steps_per_task=100)
    model = SAC("MlpPolicy", env, learning_starts=50, batch_size=32, train_freq=10,
                policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")
    model.learn(total_timesteps=300)
    assert env.unwrapped.global_step == 300 and env.unwrapped.task_index == 3  # three tasks done
    action, _ = model.predict(env.reset()[0], deterministic=True)
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)
