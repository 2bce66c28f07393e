"""Make a transfer matrix: FT(A -> B) for every ordered pair of a task list.

As Continual World did: for each pair, train A then B (``contenv/Sequence-v0``), and
compare B's success curve while it is trained with B's single-task reference run:
FT(A -> B) = (AUC_B - AUC_B^ref) / (1 - AUC_B^ref), seeds averaged before normalising.
The runs go through ````contenv sweep```` (resumable; local pool or Ray), then the matrix
is written in the CSV layout the evaluators and the distractor generator read (rows =
source trained first, columns = target) and its reference transfer RT is printed.

    contenv transfer-matrix --tasks reach-v3 push-v3 window-close-v3 --seeds 0-2 \\
        --out runs/tm --csv tm.csv -- --steps-per-task 100000 --agent mlp
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from contenv_cli import sweep


@dataclass
class MatrixArgs:
    """The task list, the seeds and where the runs go."""

    tasks: list[str] = field(default_factory=list)
    """Task names (at least two); every ordered pair is trained, A -> A included."""
    out: Path = Path("runs/transfer_matrix")
    """Root of the run directories (pairs under pairs/, references under single/)."""
    csv: Path = Path("transfer_matrix.csv")
    """Where the matrix is written (an existing file is not overwritten)."""
    method: str = "finetune"
    """Protection method of every run (CW: plain fine-tuning)."""
    seeds: str = "0-2"
    """Seeds of every pair and reference run: 0-4, 0,3,7 or 0-2,9."""
    backend: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray cluster address (ray backend)."""
    workers: int = 1
    """Concurrent trials (local backend)."""
    retries: int = 2
    """Times a failed trial is resumed before it counts as failed."""
    skip_training: bool = False
    """Only compute the matrix from runs already under --out."""


def reference_trials(args: MatrixArgs, train_args: list[str]) -> list[sweep.Trial]:
    trials = []
    for task in args.tasks:
        for seed in sweep.parse_seeds(args.seeds):
            run_dir = (args.out / "single" / sweep.slug(task) / f"seed{seed}").resolve()
            argv = ("--scenario", sweep.PAIR_SCENARIO, "--tasks", task, "--protection", args.method,
                    "--seed", str(seed), "--run-dir", str(run_dir), *train_args)
            trials.append(sweep.Trial(f"single/{sweep.slug(task)}/seed{seed}", run_dir, argv))
    return trials


def pair_trials(args: MatrixArgs, train_args: list[str]) -> list[sweep.Trial]:
    sweep_args = sweep.SweepArgs(out=args.out, pairs=list(args.tasks), methods=[args.method], seeds=args.seeds)
    return sweep.expand(sweep_args, train_args)


def compute_matrix(args: MatrixArgs, device: str = "cpu"):
    """FT(A -> B) for every pair from the finished runs; returns a ``[N, N]`` tensor."""
    import torch

    from contenv.evaluation.metrics import forward_transfer_per_task, reference_auc, task_auc
    from contenv.evaluation.rundir import load_run

    def runs(group: Path) -> list:
        dirs = sorted(group.glob("seed*"))
        if not dirs:
            raise FileNotFoundError(f"no runs under {group}: train them first (drop --skip-training)")
        return [load_run(d) for d in dirs]

    n = len(args.tasks)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for j, target in enumerate(args.tasks):
        singles = runs(args.out / "single" / sweep.slug(target))
        ref = torch.stack([reference_auc(r.success()[:, 0], r.steps, r.steps_per_task) for r in singles])
        for i, source in enumerate(args.tasks):
            pairs = runs(args.out / "pairs" / f"{sweep.slug(source)}__{sweep.slug(target)}" / sweep.slug(args.method))
            cl = torch.stack([task_auc(r.success(), r.steps, r.steps_per_task)[1] for r in pairs])
            matrix[i, j] = forward_transfer_per_task(cl[:, None].to(device), ref[:, None].to(device))[0].cpu()
    return matrix


def write_matrix_csv(path: Path, tasks: list[str], matrix) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another --csv (nothing was overwritten)")
    lines = ["source," + ",".join(tasks)]
    lines += [f"{s}," + ",".join(f"{v:.4f}" for v in row) for s, row in zip(tasks, matrix.tolist())]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    import tyro

    from contenv.evaluation.metrics import reference_transfer

    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1 :]
    args = tyro.cli(MatrixArgs, args=argv, description=__doc__.splitlines()[0], prog="contenv transfer-matrix")
    if len(args.tasks) < 2:
        raise SystemExit("error: --tasks needs at least two task names")
    if args.csv.exists():
        raise SystemExit(f"error: {args.csv} exists; choose another --csv (nothing was overwritten)")
    if not args.skip_training:
        trials = reference_trials(args, train_args) + pair_trials(args, train_args)
        run_args = sweep.SweepArgs(workers=args.workers, retries=args.retries, address=args.address)
        runner = sweep.run_ray if args.backend == "ray" else sweep.run_local
        outcomes = runner(trials, run_args, args.out.resolve() / "logs")
        failed = [name for name, outcome in outcomes if outcome.startswith("FAILED")]
        if failed:
            print(f"error: {len(failed)} trials failed: {', '.join(failed)}", file=sys.stderr)
            return 1
    matrix = compute_matrix(args)
    write_matrix_csv(args.csv, args.tasks, matrix)
    print(args.csv.read_text(), end="")
    print(f"reference transfer RT = {reference_transfer(matrix).item():.4f} (this matrix: these runs, sequence in "
          "the order given; CW's published RT, 0.42 for CW10 and 0.46 for CW20, comes from its Meta-World v1 "
          "matrix, not comparable digit for digit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
