"""``contenv train --seeds 0-9``: several seeds of one run trained as one population, one run directory each.

:func:`train_seeds` is :func:`agents.training.run.train` for a seed list: the seeds train stacked in
one :class:`~agents.population.Population` (any method it trains, with the run's
``--protection-kwargs``), and seed ``k`` writes ``<run-dir>/seed<k>`` in
exactly the format of a single-seed run (``config.json`` with its ``seed``,
``progress.csv``, TensorBoard events, checkpoints, ``agent_after_task_<i>.pt``), evaluated
through the same :class:`~contenv.evaluation.Evaluator` with the seed's own policy and
evaluation seeds. Without ``--run-dir`` each seed goes to its default single-seed place.

Resume (``--resume`` with the same arguments) restores every seed from its own
checkpoint, and the shared Adam from the seeds' slices; all seeds must hold a
checkpoint of the same step (they are written together, at task ends and at common
episode ends), else a clear error.

Example:
    >>> import tempfile
    >>> args = TrainArgs(scenario="contenv/Sequence-v0", tasks=("reach-v3",), steps_per_task=40, horizon=10,
    ...                  hidden_sizes=(8,), batch_size=4, random_steps=10, update_after=10, update_every=10,
    ...                  eval_every=20, eval_episodes=1, eval_deterministic_episodes=0, seeds="0,1",
    ...                  run_dir=Path(tempfile.mkdtemp()) / "runs", progress_bar=False)
    >>> root = train_seeds(args)
    >>> from contenv.evaluation.rundir import load_run
    >>> sorted(p.name for p in root.iterdir()), load_run(root / "seed1").steps.tolist()
    (['seed0', 'seed1'], [20, 40])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from agents.population import Population, check_protection, parse_seeds
from agents.protection import make_protection
from agents.training.checkpoint import load_checkpoint
from agents.training.run_common import (CHECKPOINT_DIR, CHECKPOINT_FILE, RunCallback, RunError, TrainArgs, check_args,
                               default_run_dir, make_scenario, prepare_run_dir, resolve_device,
                               run_config)
from contenv.evaluation.rundir import RunWriter


def seed_args(args: TrainArgs) -> list[TrainArgs]:
    """The single-seed arguments of every seed in ``args.seeds`` (run dirs ``<run-dir>/seed<k>``).

    Example:
        >>> [(a.seed, str(a.run_dir)) for a in seed_args(TrainArgs(seeds="3-4", run_dir=Path("r")))]
        [(3, 'r/seed3'), (4, 'r/seed4')]
    """
    try:
        seeds = parse_seeds(args.seeds)
        check_protection(args.protection)
    except ValueError as err:
        raise RunError(str(err)) from None
    per_seed = []
    for seed in seeds:
        one = dataclasses.replace(args, seed=seed, seeds=None)
        one.run_dir = default_run_dir(one) if args.run_dir is None else Path(args.run_dir) / f"seed{seed}"
        per_seed.append(one)
    return per_seed


def train_seeds(args: TrainArgs) -> Path:
    """Run (or resume) ``args.seeds`` together; returns the directory holding the seeds' run directories."""
    from contenv.evaluation import Evaluator
    from contenv.position_env import position_specs
    from torch.utils.tensorboard import SummaryWriter

    per_seed = seed_args(args)
    for one in per_seed:
        check_args(one)
    device = resolve_device(args.device)
    envs = [make_scenario(one) for one in per_seed]
    configs = [run_config(one, env) for one, env in zip(per_seed, envs)]
    if not args.resume:  # check every directory before writing any, so a refusal leaves nothing behind
        for one in per_seed:
            run_dir = Path(one.run_dir)
            if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
                raise RunError(f"run directory {run_dir} already exists and is not empty; pass --resume to continue "
                               "it, or choose another --run-dir (nothing is ever overwritten)")
    torch.set_num_threads(args.torch_threads)
    protections = [make_protection(one.protection, **config["protection_kwargs"]) for one, config in zip(per_seed, configs)]
    try:  # built before any run directory: a refusal here (spaces, method, memory) leaves nothing behind
        trainer = Population(envs, args.sac_config(), seeds=[one.seed for one in per_seed], device=device,
                             protection=protections)
    except (ValueError, MemoryError) as err:
        raise RunError(str(err)) from None
    run_dirs = [prepare_run_dir(one, config) for one, config in zip(per_seed, configs)]
    start, last_checkpoint = _resume(trainer, run_dirs) if args.resume else (0, 0)
    agents = trainer.members
    writers = [RunWriter(run_dir, resume=args.resume) for run_dir in run_dirs]
    boards = [SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if args.resume else None)
              for run_dir in run_dirs]
    if args.resume:
        for writer in writers:
            writer.truncate_after(start)
    total = agents[0].env.total_steps
    try:
        # One evaluator for all seeds: every evaluation episode is seeded, so sharing changes nothing.
        with Evaluator(position_specs(agents[0].env), args.eval_episodes, args.eval_deterministic_episodes,
                       args.eval_workers) as evaluator:
            callbacks = [RunCallback(one, run_dir, writer, evaluator, board, total, last_checkpoint)
                         for one, run_dir, writer, board in zip(per_seed, run_dirs, writers, boards)]
            if start < total:
                trainer.learn(total - start, callbacks=callbacks, progress_bar=args.progress_bar)
        if trainer.failed:  # the others finished; say which stopped and why (their run dirs keep their last checkpoint)
            run_dir_of = {one.seed: run_dir for one, run_dir in zip(per_seed, run_dirs)}
            stopped = "; ".join(f"{run_dir_of[m.seed]}: {m.failure}" for m in trainer.failed)
            raise RunError(f"{len(trainer.failed)} of {len(per_seed)} seeds stopped on a non-finite update, the "
                           f"others finished: {stopped}")
    finally:
        for writer, board, agent in zip(writers, boards, agents):
            writer.close()
            board.close()
            agent.env.close()
    return Path(args.run_dir) if args.run_dir is not None else Path(per_seed[0].run_dir).parent


def _resume(trainer: Population, run_dirs: list[Path]) -> tuple[int, int]:
    """Load every seed's checkpoint (all or none, all of one step); returns (step, last checkpoint)."""
    paths = [run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE for run_dir in run_dirs]
    present = [path.exists() for path in paths]
    if not any(present):
        return 0, 0
    if not all(present):
        missing = [str(p) for p, ok in zip(paths, present) if not ok]
        raise RunError(f"--resume: some seeds have no checkpoint ({', '.join(missing)}); "
                       "the seeds of a population resume together from checkpoints of one step")
    states = [load_checkpoint(path, agent) for path, agent in zip(paths, trainer.members)]
    steps = [int(state["step"]) for state in states]
    if len(set(steps)) != 1:
        detail = ", ".join(f"{p}: step {s}" for p, s in zip(paths, steps))
        raise RunError(f"--resume: the seeds' checkpoints are of different steps ({detail}); the run was killed while "
                       "writing them: resume each seed on its own (scripts/train.py --seed N --resume) or restart")
    trainer.load_optimizer_from_members()
    state = states[0]
    return steps[0], int(state["extra"].get("last_checkpoint", steps[0]))


__all__ = ["train_seeds", "seed_args"]
