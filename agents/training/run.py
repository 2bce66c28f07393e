"""A training run: SAC on a scenario, written to a run directory, resumable.

:func:`train` is what ``scripts/train.py`` (and ``scripts/reference.py``) run. The run
directory holds

- ``config.json``: every argument plus the resolved scenario (``scenario``, ``tasks``,
  ``steps_per_task``, ``horizon``, ...) and the full agent config (``sac``);
- ``progress.csv``: one row per eval point (every ``eval_every`` steps and at the end):
  ``step``, ``active_task``, ``test/<mode>/<i>/<task>/{success,return,length}`` of every
  position (batched evaluator), training statistics ``train/...`` and plasticity
  readouts ``plasticity/<actor|q1|q2>/<dormant|srank|weight_norm|grad_norm>``
  (:mod:`agents.training.plasticity`, on one replay batch per eval point);
- ``tensorboard/``: the same numbers plus throughput, as TensorBoard events;
- ``checkpoints/checkpoint.pt``: the latest resumable checkpoint (at every task end and
  at the first episode end after every ``checkpoint_every`` steps), and
  ``checkpoints/agent_after_task_<i>.pt``: the agent at the end of every task
  (:meth:`agents.sac.SAC.load` reads them).

``resume=True`` continues a killed run from its checkpoint: the config must match
(else an error lists the differing keys and nothing is written), rows logged after the
checkpoint are dropped and logged again, so ``progress.csv`` ends with every eval point
once, and on CPU the numbers equal those of an uninterrupted run.

Example:
    >>> import tempfile
    >>> args = TrainArgs(scenario="contenv/Sequence-v0", tasks=("reach-v3",), steps_per_task=40, horizon=10,
    ...                  hidden_sizes=(8,), batch_size=4, random_steps=10, update_after=10, update_every=10,
    ...                  eval_every=20, eval_episodes=1, eval_deterministic_episodes=0,
    ...                  run_dir=Path(tempfile.mkdtemp()) / "run", progress_bar=False)
    >>> run_dir = train(args)
    >>> from contenv.evaluation.rundir import load_run
    >>> load_run(run_dir).steps.tolist()
    [20, 40]
"""

from __future__ import annotations

from pathlib import Path

import torch

from agents.training.population_run import train_seeds
from agents.training.checkpoint import load_checkpoint
from agents.protection import make_protection
from agents.training.run_common import (CHECKPOINT_DIR, CHECKPOINT_FILE, RUNTIME_KEYS, RunCallback, RunError, TrainArgs,
                               check_args, config_differences, default_run_dir, eval_seed,
                               make_scenario, prepare_run_dir, resolve_device, run_config, train_columns)
from agents.sac import SAC
from contenv.evaluation.rundir import RunWriter


def train(args: TrainArgs) -> Path:
    """Run (or resume) one training run; returns its run directory."""
    from contenv.evaluation import Evaluator
    from contenv.position_env import position_specs
    from torch.utils.tensorboard import SummaryWriter

    if args.seeds is not None and not args.multitask:  # several seeds in one process (--multitask: refused below)
        return train_seeds(args)
    if args.run_dir is None:
        args.run_dir = default_run_dir(args)
    check_args(args)
    device = resolve_device(args.device)
    env = make_scenario(args)
    if args.multitask:
        from contenv.multitask import MultiTaskEnv

        env = MultiTaskEnv.from_sequence(env)
    config = run_config(args, env)
    torch.set_num_threads(args.torch_threads)
    protection = make_protection(args.protection, **config["protection_kwargs"])
    if args.multitask:
        from agents.multitask import MultiTaskSAC as agent_class
    else:
        agent_class = SAC
    try:  # built before the run directory: a refusal here leaves nothing behind
        agent = agent_class(env, args.sac_config(), protection=protection, seed=args.seed, device=device)
    except ValueError as err:
        raise RunError(str(err)) from None
    run_dir = prepare_run_dir(args, config)
    checkpoint_path = run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE
    start, last_checkpoint = 0, 0
    if args.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, agent)  # a CheckpointError names the file; nothing written yet
        start, last_checkpoint = int(state["step"]), int(state["extra"].get("last_checkpoint", state["step"]))
    specs = position_specs(agent.env)
    writer = RunWriter(run_dir, resume=args.resume)
    if args.resume:
        writer.truncate_after(start)
    tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if args.resume else None)
    total = agent.env.total_steps
    try:
        with Evaluator(specs, args.eval_episodes, args.eval_deterministic_episodes, args.eval_workers) as evaluator:
            callback = RunCallback(args, run_dir, writer, evaluator, tensorboard, total, last_checkpoint)
            if start < total:
                agent.learn(total - start, callback=callback, progress_bar=args.progress_bar)
    finally:
        writer.close()
        tensorboard.close()
        agent.env.close()
    return run_dir


# The shared pieces live in agents.training.run_common; they stay importable from here.
__all__ = ["TrainArgs", "RunError", "RunCallback", "train", "make_scenario", "run_config", "config_differences",
           "eval_seed", "check_args", "prepare_run_dir", "resolve_device", "default_run_dir", "train_columns",
           "CHECKPOINT_DIR", "CHECKPOINT_FILE", "RUNTIME_KEYS"]
