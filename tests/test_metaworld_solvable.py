"""Meta-World's scripted experts solve the CW10 test envs through our layer and evaluator."""

import numpy as np
import pytest

import contenv
from contenv.evaluation import Evaluator, ScriptedPolicy
from contenv.scripted import ScriptedMetaWorldPolicy


def test_scripted_policies_solve_cw10_as_on_raw_metaworld(cw10_tasks):
    # Raw Meta-World v3 at horizon 200, 30 episodes: mean 0.93, push-back lowest (0.63).
    specs = contenv.position_specs("contenv/CW10-v0")
    with Evaluator(specs, episodes=30, deterministic_episodes=0, num_workers=2) as evaluator:
        result = evaluator.evaluate(ScriptedPolicy(cw10_tasks), seed=0)
    rates = dict(zip(cw10_tasks, result.stochastic.success.round(3)))
    assert result.stochastic.success.mean() >= 0.85, rates
    assert result.stochastic.success.min() >= 0.5, rates
    assert np.all(result.stochastic.length == 200)


def test_unknown_policy_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Did you mean: hammer-v3"):
        ScriptedMetaWorldPolicy("hammer-v2")
