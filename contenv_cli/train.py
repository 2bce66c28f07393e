"""Train a SAC agent (Continual World's MLP, or a GRU/LSTM) on a continual scenario.

Writes a run directory (config.json, progress.csv, TensorBoard events, checkpoints)
that ``contenv report`` reads. The arguments are the dataclass
:class:`agents.training.run.TrainArgs` (one docstring per field; ``--help`` lists them).

Examples:
    contenv train --scenario contenv/CW10-v0 --agent mlp --seed 0 --run-dir runs/cw10/mlp/seed0
    contenv train --scenario contenv/Sequence-v0 --tasks reach-v3 push-v3 --steps-per-task 50000 \\
        --agent gru --eval-every 5000 --run-dir runs/pair/gru
    contenv train --scenario contenv/CW10-v0 --agent mlp --seed 0 --run-dir runs/cw10/mlp/seed0 --resume
        # continues a killed run: the same arguments plus --resume (a different config is refused)
    contenv train --scenario contenv/CW10-v0 --agent mlp --seeds 0-9 --run-dir runs/cw10/mlp
        # ten seeds trained together in one process (one population, agents/population.py), each in runs/cw10/mlp/seed<k>
"""

from __future__ import annotations

import sys

import tyro

from agents.training.checkpoint import CheckpointError
from agents.training.run import TrainArgs, train


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(TrainArgs, args=argv, description=__doc__, prog="contenv train")
    try:
        run_dir = train(args)
    except (ValueError, NotImplementedError, CheckpointError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
