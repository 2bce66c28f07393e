"""``python -m contenv_cli <command> ...`` (the same as the ``contenv`` command)."""

from contenv_cli import console_main

console_main()
