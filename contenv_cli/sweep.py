"""Sweep scenario x method x seed (or all ordered task pairs) as resumable training runs.

Every trial is one run directory made by ``contenv train``, so a sweep is resumable by
construction: finished runs are skipped, started ones continue with ``--resume`` from
their last checkpoint, and a failed trial is retried the same way. Two backends:

- ``local`` (default): a pool of ``--workers`` concurrent training processes;
- ``ray``: each trial is a Ray task (``--address auto`` joins a running cluster, no address
  starts a local instance). Run directories must live on a filesystem every node sees.

Examples::

    contenv sweep --scenarios contenv/CW10-v0 --methods finetune ewc --seeds 0-4 --out runs/cw10
    contenv sweep --pairs reach-v3 push-v3 window-close-v3 --methods finetune --seeds 0-2 \\
        --out runs/pairs -- --steps-per-task 100000
    contenv sweep ... --backend ray --address auto

Arguments after ``--`` go to every ``contenv train`` call unchanged.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Trials run `python -m contenv_cli train`, with this package's root on PYTHONPATH so a
# checkout works as well as an installed wheel.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
PAIR_SCENARIO = "contenv/Sequence-v0"


@dataclass
class SweepArgs:
    """Which runs to make and where they run."""

    out: Path = Path("runs/sweep")
    """Root directory; each trial gets ``OUT/<scenario>/<method>/seed<k>``."""
    scenarios: list[str] = field(default_factory=lambda: ["contenv/CW10-v0"])
    """Scenario ids to sweep (ignored with --pairs)."""
    pairs: list[str] = field(default_factory=list)
    """Task names: sweep every ordered pair (A, B), A -> A included, as a two-task sequence (transfer matrix)."""
    methods: list[str] = field(default_factory=lambda: ["finetune"])
    """Protection methods (``--protection`` of ``contenv train``)."""
    seeds: str = "0-2"
    """Seeds: ``0-4``, ``0,3,7`` or a mix ``0-2,9`` (the syntax of every command's --seeds)."""
    backend: Literal["local", "ray"] = "local"
    """Where trials run."""
    address: str | None = None
    """Ray cluster address (``auto`` joins a running cluster); none starts a local Ray instance."""
    workers: int = 1
    """Concurrent trials (local backend) / CPUs reserved per trial is 1 (ray backend)."""
    retries: int = 2
    """Times a failed trial is resumed from its checkpoint before it counts as failed."""
    dry_run: bool = False
    """Print the trials and their state, run nothing."""


@dataclass(frozen=True)
class Trial:
    name: str
    run_dir: Path
    argv: tuple[str, ...]


def parse_seeds(text: str) -> list[int]:
    """``"0-2,7"`` -> ``[0, 1, 2, 7]`` (:func:`agents.population.parse_seeds`, shared by every command).

    Example:
        >>> parse_seeds("0-2,7")
        [0, 1, 2, 7]
    """
    from agents.population import parse_seeds as parse

    return parse(text)


def slug(text: str) -> str:
    """A directory-safe name: ``contenv/CW10-v0`` -> ``CW10-v0``."""
    keep = text.split("/")[-1]
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in keep)


def expand(args: SweepArgs, train_args: list[str]) -> list[Trial]:
    """Every trial of the sweep, in a stable order."""
    seeds = parse_seeds(args.seeds)
    if args.pairs:
        if len(args.pairs) < 2:
            raise ValueError("--pairs needs at least two tasks")
        # All ordered pairs, A -> A included: CW's matrix has a diagonal.
        groups = [(f"pairs/{slug(a)}__{slug(b)}", ["--scenario", PAIR_SCENARIO, "--tasks", a, b])
                  for a, b in itertools.product(args.pairs, repeat=2)]
    else:
        groups = [(slug(s), ["--scenario", s]) for s in args.scenarios]
    trials = []
    for (group, scenario_argv), method, seed in itertools.product(groups, args.methods, seeds):
        run_dir = (args.out / group / slug(method) / f"seed{seed}").resolve()
        argv = (*scenario_argv, "--protection", method, "--seed", str(seed), "--run-dir", str(run_dir), *train_args)
        trials.append(Trial(f"{group}/{slug(method)}/seed{seed}", run_dir, tuple(argv)))
    return trials


def trial_state(run_dir: Path) -> str:
    """``done`` (every eval point logged), ``started`` (resume it) or ``new``."""
    from contenv.evaluation.rundir import RunLoadError, load_run

    if not (run_dir / "config.json").exists():
        return "new"
    try:
        return "done" if load_run(run_dir).is_complete else "started"
    except (RunLoadError, ValueError, OSError):
        return "started"


def run_trial(trial: Trial, retries: int, log_dir: Path) -> tuple[str, str]:
    """Run (or resume) one trial to completion; returns (name, outcome)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (trial.name.replace("/", "__") + ".log")
    for attempt in range(retries + 1):
        state = trial_state(trial.run_dir)
        if state == "done":
            return trial.name, "done" if attempt else "skipped (already done)"
        argv = [sys.executable, "-m", "contenv_cli", "train", *trial.argv] + (["--resume"] if state == "started" else [])
        path = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        with open(log_path, "a") as log:
            log.write(f"\n=== attempt {attempt + 1}: {' '.join(argv)}\n")
            log.flush()
            code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}).returncode
        if code == 0 and trial_state(trial.run_dir) == "done":
            return trial.name, "done" + (f" (after {attempt} retries)" if attempt else "")
    return trial.name, f"FAILED after {retries + 1} attempts (log: {log_path})"


def run_local(trials: list[Trial], args: SweepArgs, log_dir: Path) -> list[tuple[str, str]]:
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        return list(pool.map(lambda t: run_trial(t, args.retries, log_dir), trials))


def run_ray(trials: list[Trial], args: SweepArgs, log_dir: Path) -> list[tuple[str, str]]:
    try:
        import ray
    except ImportError:
        raise SystemExit("the ray backend needs Ray: pip install 'contenv[ray]'") from None
    ray.init(address=args.address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    # Retries happen inside run_trial (each one resumes from the checkpoint); Ray's own
    # max_retries additionally covers a node that dies under a trial.
    remote = ray.remote(num_cpus=1, max_retries=args.retries)(run_trial)
    try:
        return ray.get([remote.remote(t, args.retries, log_dir) for t in trials])
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1 :]
    args = tyro.cli(SweepArgs, args=argv, description=__doc__.splitlines()[0], prog="contenv sweep")
    try:
        trials = expand(args, train_args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(trials)} trials under {args.out} ({args.backend} backend)")
    if args.dry_run:
        for t in trials:
            print(f"  {trial_state(t.run_dir):8s} {t.name}")
        return 0
    start = time.time()
    runner = run_ray if args.backend == "ray" else run_local
    outcomes = runner(trials, args, args.out.resolve() / "logs")
    for name, outcome in outcomes:
        print(f"  {outcome:30s} {name}")
    failed = sum(o.startswith("FAILED") for _, o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} trials done in {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
