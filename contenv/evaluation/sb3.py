"""Stable-Baselines3 users get the same run directories and tables as our agents.

:class:`ContinualEvalCallback` evaluates any SB3 model on every position of the scenario
it trains on, every ``eval_every`` steps, and writes ``config.json`` and ``progress.csv``
in the run-directory format that ``scripts/report.py`` reads.

Example:
    >>> import tempfile, gymnasium as gym, contenv
    >>> from stable_baselines3 import SAC
    >>> env = gym.make("contenv/Sequence-v0", tasks=["reach-v3", "push-v3"], steps_per_task=40, horizon=20)
    >>> model = SAC("MlpPolicy", env, learning_starts=10, policy_kwargs={"net_arch": [16]}, device="cpu")
    >>> run_dir = tempfile.mkdtemp()
    >>> _ = model.learn(80, callback=ContinualEvalCallback(run_dir, eval_every=40, episodes=1, deterministic_episodes=0))
    >>> from contenv.evaluation.rundir import load_run
    >>> load_run(run_dir).success().shape   # eval points at steps 0, 40, 80 x 2 tasks
    torch.Size([3, 2])

A run directory that already holds a run is refused before anything is written (a
``FileExistsError``), unless ``resume=True``: then its ``config.json`` must match (else a
``ValueError`` lists the differences, nothing written), rows after the model's step are
dropped and new ones appended. To resume, load the model, put the scenario env at the
model's step and continue without resetting the step counter::

    model = SAC.load("model.zip", env=env)
    env.unwrapped.load_state_dict({**env.unwrapped.state_dict(), "global_step": model.num_timesteps})
    model.learn(remaining, reset_num_timesteps=False, callback=ContinualEvalCallback(run_dir, ..., resume=True))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from contenv.continual import ContinualEnv
from contenv.evaluation.evaluator import Evaluator, SB3Policy
from contenv.evaluation.rundir import CONFIG_FILE, PROGRESS_FILE, RunWriter, write_config
from contenv.position_env import position_specs

__all__ = ["ContinualEvalCallback"]


class ContinualEvalCallback(BaseCallback):
    """Evaluate an SB3 model on all positions every ``eval_every`` steps and log a run directory.

    Args:
        run_dir: where ``config.json`` and ``progress.csv`` go (must not hold a run yet).
        eval_every: environment steps between evaluations (CW: 20,000); also at step 0 and at the end.
        episodes: stochastic test episodes per position (CW: 10).
        deterministic_episodes: deterministic test episodes per position (CW: 1).
        num_workers: evaluation worker processes (0: in this process).
        seed: evaluation seed (episode seeds derive from it and the eval point).
        extra_config: more entries for ``config.json`` (e.g. hyperparameters).
        resume: continue the run already in ``run_dir`` (its config must match).
    """

    def __init__(
        self,
        run_dir: str | Path,
        eval_every: int = 20_000,
        episodes: int = 10,
        deterministic_episodes: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        extra_config: dict[str, Any] | None = None,
        verbose: int = 0,
        resume: bool = False,
    ) -> None:
        super().__init__(verbose)
        if eval_every <= 0:
            raise ValueError(f"eval_every must be a positive number of steps, got {eval_every}")
        self.run_dir = Path(run_dir)
        self.eval_every = int(eval_every)
        self.episodes, self.deterministic_episodes = episodes, deterministic_episodes
        self.num_workers, self.eval_seed = num_workers, seed
        self.extra_config = dict(extra_config or {})
        self.resume = bool(resume)
        self._last_eval: int | None = None

    def _on_training_start(self) -> None:
        env = self.training_env.get_attr("unwrapped")[0]
        if not isinstance(env, ContinualEnv):
            raise TypeError(f"ContinualEvalCallback needs a contenv scenario env, got {type(env).__name__}")
        self._scenario = env
        spec = self.training_env.get_attr("spec")[0]
        config = {
            "scenario": spec.id if spec is not None else "contenv/Sequence-v0",
            "tasks": list(env.task_names),
            "steps_per_task": env.steps_per_task,
            "horizon": env.horizon,
            "task_id": env.task_id,
            "seed": self.model.seed,
            "agent": f"sb3-{type(self.model).__name__.lower()}",
            "protection": "finetune",
            "eval_every": self.eval_every,
            "eval_episodes": self.episodes,
            **self.extra_config,
        }
        config = json.loads(json.dumps(config, default=str))  # what config.json holds
        self._check_run_dir(config, env)  # every refusal happens here, before anything is written
        if not self.resume:
            write_config(self.run_dir, config)
        self._writer = RunWriter(self.run_dir, resume=self.resume)
        if self.resume:
            self._writer.truncate_after(self.num_timesteps)
        self._evaluator = Evaluator(position_specs(env), self.episodes, self.deterministic_episodes, self.num_workers)
        if self.resume and self._writer.last_step == self.num_timesteps:
            self._last_eval = self.num_timesteps  # this point is logged already
        else:
            self._evaluate()

    def _check_run_dir(self, config: dict[str, Any], env: ContinualEnv) -> None:
        config_path = self.run_dir / CONFIG_FILE
        if not self.resume:
            if self.run_dir.exists() and (not self.run_dir.is_dir() or any(self.run_dir.iterdir())):
                raise FileExistsError(f"ContinualEvalCallback: {self.run_dir} exists and is not empty; pass "
                                      "resume=True to continue the run in it, or choose another run_dir "
                                      "(nothing was written)")
            return
        if not config_path.is_file():
            raise FileNotFoundError(f"ContinualEvalCallback(resume=True): {config_path} does not exist; "
                                    "nothing to resume (nothing was written)")
        saved = json.loads(config_path.read_text())
        differing = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        if differing:
            listing = "; ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in differing)
            raise ValueError(f"ContinualEvalCallback(resume=True): this training differs from the run in "
                             f"{config_path}: {listing} (nothing was written)")
        global_step = self.training_env.get_attr("global_step")[0]
        if global_step != self.num_timesteps:
            raise ValueError(f"ContinualEvalCallback(resume=True): the scenario env is at step {global_step}, the "
                             f"model at step {self.num_timesteps}; move the env first (env.unwrapped.load_state_dict"
                             ") and call learn(..., reset_num_timesteps=False) (nothing was written)")

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_every == 0:
            self._evaluate()
        return True

    def _on_training_end(self) -> None:
        if self._last_eval != self.num_timesteps:
            self._evaluate()
        self._writer.close()
        self._evaluator.close()

    def _evaluate(self) -> None:
        # The training env's position is in the worker for SubprocVecEnv; ask it.
        global_step = self.training_env.get_attr("global_step")[0]
        active = min(global_step // self._scenario.steps_per_task, self._scenario.num_tasks - 1)
        result = self._evaluator.evaluate(SB3Policy(self.model), seed=self.eval_seed + self.num_timesteps)
        self._writer.write({"step": self.num_timesteps, "active_task": active, **result.as_row()})
        self._last_eval = self.num_timesteps
