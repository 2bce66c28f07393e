"""The batched evaluator: same numbers as the plain loop, recurrent state handling, run rows."""

import numpy as np
import pytest

import contenv
from contenv.evaluation import Evaluator, ScriptedPolicy, evaluate, evaluate_sequential
from contenv.tasks.memory_policies import remembering_policy

MIXED = ["reach-v3", "copy(p=2,i=3)", "window-close-v3", "repeat-first(d=4)"]


class NoisyScripted(ScriptedPolicy):
    """Stochastic in its own way: noise seeded by the observation, so it is reproducible."""

    def act(self, obs, state, episode_start, deterministic, positions, rewards=None):
        actions, state = super().act(obs, state, episode_start, deterministic, positions)
        if not deterministic:
            noise = np.stack([np.random.default_rng(abs(hash(o.tobytes())) % 2**32).normal(0, 0.3, 4) for o in obs])
            actions = np.clip(actions + noise, -1, 1)
        return actions, state


class RememberingBatch:
    """Per-row memory-task experts whose memory lives in the evaluator's `state`."""

    def __init__(self, specs):
        self.specs = specs

    def act(self, obs, state, episode_start, deterministic, positions, rewards=None):
        state = list(state) if state is not None else [None] * len(obs)
        actions = []
        for i, (o, p) in enumerate(zip(obs, positions)):
            if episode_start[i]:
                env = self.specs[p]().task_env
                state[i] = remembering_policy(env)
                state[i].reset()
            actions.append(state[i].act(o))  # memory observations lead the padded layout
        return np.stack(actions), state


@pytest.mark.parametrize("num_workers, max_envs", [(0, 64), (2, 64), (2, 6)])
def test_batched_equals_sequential(num_workers, max_envs):
    specs = contenv.position_specs("contenv/Sequence-v0", tasks=["reach-v3", "push-v3", "window-close-v3"], horizon=40)
    policy = NoisyScripted([s.task_name for s in specs])
    batched = evaluate(policy, specs, episodes=3, deterministic_episodes=1, seed=7, num_workers=num_workers, max_envs=max_envs)
    plain = evaluate_sequential(policy, specs, episodes=3, deterministic_episodes=1, seed=7)
    for mode in ("stochastic", "deterministic"):
        for stat in ("success", "ret", "length"):
            np.testing.assert_allclose(getattr(getattr(batched, mode), stat), getattr(getattr(plain, mode), stat))


def test_different_seeds_give_different_episodes():
    specs = contenv.position_specs("contenv/Sequence-v0", tasks=["push-v3"], horizon=30)
    policy = NoisyScripted(["push-v3"])
    a = evaluate(policy, specs, episodes=2, deterministic_episodes=0, seed=1)
    b = evaluate(policy, specs, episodes=2, deterministic_episodes=0, seed=2)
    assert a.stochastic.ret[0] != b.stochastic.ret[0]


def test_recurrent_state_is_reset_at_every_episode_start_on_memory_tasks():
    specs = contenv.position_specs("contenv/Sequence-v0", tasks=["copy(p=2,i=3)", "repeat-first(d=4)"])
    # 2 envs per position and 5 episodes: slots roll over to new episodes mid-batch.
    result = evaluate(RememberingBatch(specs), specs, episodes=5, deterministic_episodes=0, max_envs=4)
    assert result.stochastic.success.tolist() == [1.0, 1.0]
    assert result.stochastic.score.tolist() == [1.0, 1.0]


def test_result_row_uses_run_directory_columns():
    specs = contenv.position_specs("contenv/Sequence-v0", tasks=["reach-v3", "window-close-v3"], horizon=200)
    row = evaluate(ScriptedPolicy(["reach-v3", "window-close-v3"]), specs, episodes=1, deterministic_episodes=1).as_row()
    assert row["test/stochastic/0/reach-v3/success"] == 1.0
    assert row["test/deterministic/1/window-close-v3/success"] == 1.0
    assert row["test/stochastic/1/window-close-v3/length"] == 200.0


def test_bad_arguments():
    specs = contenv.position_specs("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"])
    with pytest.raises(ValueError, match="at least one episode"):
        Evaluator(specs, episodes=0, deterministic_episodes=0)
    with pytest.raises(ValueError, match="max_envs=1 is below the number of positions"):
        Evaluator(specs, max_envs=1)
