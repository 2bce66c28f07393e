"""Evaluation: the last stage of the data path scenarios -> environments -> agents -> evaluation.

- :mod:`contenv.evaluation.evaluator`: :class:`Evaluator`, :func:`evaluate`, the policy adapters
- :mod:`contenv.evaluation.episode_pool`: the episodes of every position run together (subprocess workers)
- :mod:`contenv.evaluation.rundir`: the run-directory format (``config.json``, ``progress.csv``)
- :mod:`contenv.evaluation.metrics`: Continual World's metrics and bootstrap confidence intervals
- :mod:`contenv.evaluation.report`: tables and plots over run directories
- :mod:`contenv.evaluation.sb3`: the Stable-Baselines3 callback (needs ``stable-baselines3``)

The package itself re-exports the evaluator (what ``contenv.evaluation`` held before it became a
package); the other modules are imported by name, so ``import contenv.evaluation`` stays light.
"""

from contenv.evaluation.evaluator import (
    BatchedPolicy,
    EpisodeStats,
    EvaluationResult,
    Evaluator,
    SB3Policy,
    ScriptedPolicy,
    episode_seed,
    evaluate,
    evaluate_sequential,
)

__all__ = [
    "BatchedPolicy",
    "EpisodeStats",
    "EvaluationResult",
    "Evaluator",
    "SB3Policy",
    "ScriptedPolicy",
    "episode_seed",
    "evaluate",
    "evaluate_sequential",
]
