"""``python -m contenv <command> ...``: the ``contenv`` command (see :mod:`contenv_cli`)."""

from contenv_cli import console_main

console_main()
