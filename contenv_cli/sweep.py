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

Arguments after ``--`` go to every ``contenv train`` call unchanged (``contenv sweep ... --
--steps-per-task 100000``).

Populations: the trials of one scenario and method differ only by seed, so they train as one
population (``contenv train --seeds a,b,c``, :mod:`agents.population`) of at most
``--population-size`` members (default 4), each still writing its own ``seed<k>`` directory; methods a
population cannot train (HNET, VCL, PackNet) and ``--population-size 1`` run one process per
trial. A population that fails is retried trial by trial (``--resume``), so one bad seed costs
only itself.
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
    population_size: int = 4
    """Most trials trained together as one population (1: one process per trial). 4 from
    ``scripts/bench_population.py`` on this 2-core CPU: with CW's MLP and the default GRU a
    population of 4 trains as fast as separate runs or a little faster (x1.12, x1.02), a larger one
    slower for the GRU (x0.90 at 16); small agents gain more from more members (the memory-load
    agent: x1.80 at 4, x2.76 at 16), so ``contenv study`` uses 16 (docs/populations.md)."""
    dry_run: bool = False
    """Print the trials and their state, run nothing."""


@dataclass(frozen=True)
class Trial:
    name: str
    run_dir: Path
    argv: tuple[str, ...]

    @property
    def seed(self) -> int:
        return int(_flag_value(self.argv, "--seed", "0"))

    @property
    def shared_argv(self) -> tuple[str, ...]:
        """The arguments without ``--seed`` and ``--run-dir``: what members of a population share."""
        out, skip = [], False
        for i, item in enumerate(self.argv):
            if skip:
                skip = False
                continue
            if item in ("--seed", "--run-dir"):
                skip = True
                continue
            out.append(item)
        return tuple(out)


def _flag_value(argv: tuple[str, ...], flag: str, default: str | None = None) -> str | None:
    """The value after the last ``flag`` in ``argv``."""
    value = default
    for i, item in enumerate(argv[:-1]):
        if item == flag:
            value = argv[i + 1]
    return value


def groupable(trial: Trial) -> bool:
    """Whether a trial can join a population: a method populations train, no --multitask, and a
    run directory named ``seed<k>`` (a population writes ``<run-dir>/seed<k>``)."""
    from agents.population import check_protection

    if "--multitask" in trial.argv or trial.run_dir.name != f"seed{trial.seed}":
        return False
    try:
        check_protection(_flag_value(trial.argv, "--protection", "finetune"))
    except ValueError:
        return False
    return True


def populations(trials: list[Trial], size: int) -> list[list[Trial]]:
    """Trials grouped into populations: same shared arguments, same parent directory and the same
    state (new or started: they resume together), at most ``size`` each, in the trials' order.
    Trials that cannot join one form a group of their own.

    Example:
        >>> t = [Trial(f"s{k}", Path(f"out/ewc/seed{k}"), ("--protection", "ewc", "--seed", str(k),
        ...            "--run-dir", f"out/ewc/seed{k}")) for k in range(5)]
        >>> [[x.seed for x in group] for group in populations(t, 2)]
        [[0, 1], [2, 3], [4]]
    """
    groups: dict[tuple, list[Trial]] = {}
    order: list[tuple] = []
    for trial in trials:
        key = ((trial.shared_argv, str(trial.run_dir.parent), trial_state(trial.run_dir)) if size > 1
               and groupable(trial) else (trial.name,))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(trial)
    return [group[i : i + size] for key in order for group in [groups[key]] for i in range(0, len(group), max(1, size))]


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


def _train(argv: list[str], log_path: Path) -> int:
    path = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    with open(log_path, "a") as log:
        log.write(f"\n=== {' '.join(argv)}\n")
        log.flush()
        return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}).returncode


def run_trial(trial: Trial, retries: int, log_dir: Path) -> tuple[str, str]:
    """Run (or resume) one trial to completion; returns (name, outcome)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (trial.name.replace("/", "__") + ".log")
    for attempt in range(retries + 1):
        state = trial_state(trial.run_dir)
        if state == "done":
            return trial.name, "done" if attempt else "skipped (already done)"
        argv = [sys.executable, "-m", "contenv_cli", "train", *trial.argv] + (["--resume"] if state == "started" else [])
        code = _train(argv, log_path)
        if code == 0 and trial_state(trial.run_dir) == "done":
            return trial.name, "done" + (f" (after {attempt} retries)" if attempt else "")
    return trial.name, f"FAILED after {retries + 1} attempts (log: {log_path})"


def run_population(group: list[Trial], retries: int, log_dir: Path) -> list[tuple[str, str]]:
    """Run a group of trials as one population (``contenv train --seeds``); if it fails, each
    trial that is not done is retried on its own, resuming from its checkpoint."""
    if len(group) == 1:
        return [run_trial(group[0], retries, log_dir)]
    log_dir.mkdir(parents=True, exist_ok=True)
    todo = [t for t in group if trial_state(t.run_dir) != "done"]
    if not todo:
        return [(t.name, "skipped (already done)") for t in group]
    first = todo[0]
    log_path = log_dir / (first.name.replace("/", "__") + f"+{len(todo) - 1}.log")
    seeds = ",".join(str(t.seed) for t in todo)
    resume = ["--resume"] if trial_state(first.run_dir) == "started" else []
    argv = [sys.executable, "-m", "contenv_cli", "train", *first.shared_argv, "--seeds", seeds,
            "--run-dir", str(first.run_dir.parent), *resume]
    code = _train(argv, log_path)
    outcomes = {t.name: "skipped (already done)" for t in group if t not in todo}
    for t in todo:
        if code == 0 and trial_state(t.run_dir) == "done":
            outcomes[t.name] = f"done (population of {len(todo)})"
        elif retries > 0:  # the population was the first attempt; one process per trial from here on
            outcomes[t.name] = run_trial(t, retries - 1, log_dir)[1]
        else:
            outcomes[t.name] = f"FAILED after 1 attempt (population of {len(todo)}; log: {log_path})"
    return [(t.name, outcomes[t.name]) for t in group]


def run_local(trials: list[Trial], args: SweepArgs, log_dir: Path) -> list[tuple[str, str]]:
    groups = populations(trials, args.population_size)
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        return [o for outcomes in pool.map(lambda g: run_population(g, args.retries, log_dir), groups) for o in outcomes]


def run_ray(trials: list[Trial], args: SweepArgs, log_dir: Path) -> list[tuple[str, str]]:
    try:
        import ray
    except ImportError:
        raise SystemExit("the ray backend needs Ray: pip install 'contenv[ray]'") from None
    ray.init(address=args.address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    # Retries happen inside run_population / run_trial (each one resumes from the checkpoint); Ray's
    # own max_retries additionally covers a node that dies under a trial.
    remote = ray.remote(num_cpus=1, max_retries=args.retries)(run_population)
    try:
        groups = populations(trials, args.population_size)
        return [o for outcomes in ray.get([remote.remote(g, args.retries, log_dir) for g in groups]) for o in outcomes]
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
    if args.population_size < 1:
        print(f"error: --population-size must be >= 1 (1: one process per trial), got {args.population_size}",
              file=sys.stderr)
        return 2
    groups = populations(trials, args.population_size)
    print(f"{len(trials)} trials under {args.out} ({args.backend} backend) in {len(groups)} processes "
          f"(populations of at most {args.population_size})")
    if args.dry_run:
        for group in groups:
            for t in group:
                print(f"  {trial_state(t.run_dir):8s} {t.name}" + (f"  [population of {len(group)}]" if len(group) > 1 else ""))
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
