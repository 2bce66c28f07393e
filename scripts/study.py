"""Shim for a checkout: `python scripts/study.py ...` is `contenv study ...` (contenv_cli/study.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, installed or not

from contenv_cli.study import *  # noqa: E402,F401,F403  (tests and users reach the module's names here)
from contenv_cli.study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
