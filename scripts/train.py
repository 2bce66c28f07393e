"""Shim for a checkout: `python scripts/train.py ...` is `contenv train ...` (contenv_cli/train.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, installed or not

from contenv_cli.train import *  # noqa: E402,F401,F403  (tests and users reach the module's names here)
from contenv_cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
