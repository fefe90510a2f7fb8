"""``python -m snnrun ...`` (e.g. under torchrun) is the ``snnrun`` command."""

from snnrun.cli.command import main

main()
