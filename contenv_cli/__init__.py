"""The ``contenv`` command: one entry point with a subcommand per job.

Installed with the package as the console script ``contenv`` and runnable as
``python -m contenv`` (or ``python -m contenv_cli``); ``scripts/*.py`` in a checkout are
thin shims over the same modules. Each subcommand is one module of this package whose
``main(argv)`` returns the exit status; ``contenv <command> --help`` prints its options.

This package sits on top of the others (it imports ``contenv``, ``agents`` and
``scenarios``; none of them imports it), so it adds no import cycle.

Example:
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: contenv <command> [options]
    ...
    0
    >>> main(["no-such-command"])  # the error goes to stderr
    2
"""

from __future__ import annotations

import importlib
import sys

# command -> (module of this package, one line for the overview)
COMMANDS = {
    "train": ("train", "train a SAC agent (MLP, GRU, LSTM) on a scenario; writes a resumable run directory"),
    "reference": ("reference", "single-task reference runs of a scenario's tasks (for forward transfer)"),
    "report": ("report", "Continual World table (performance, forgetting, forward transfer) and plots of run directories"),
    "sweep": ("sweep", "scenario x method x seed sweeps as resumable runs (local pool or Ray)"),
    "transfer-matrix": ("transfer_matrix", "train every ordered task pair and write the transfer matrix CSV"),
    "study": ("study", "run a study of a published finding (its runs, then a report with a verdict)"),
    "demo": ("demo", "a five-minute continual run on memory tasks, then its table"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: contenv <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`contenv <command> --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``contenv <command> [options]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"contenv_cli.{COMMANDS[name][0]}")
    try:
        return int(module.main(rest) or 0)
    except SystemExit as exit_:  # argparse/tyro exit on --help and on bad options
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


def console_main() -> None:
    """The console-script entry point."""
    sys.exit(main())
