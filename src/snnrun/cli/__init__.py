"""The ``snnrun`` command: :mod:`.command` (training and dispatch), :mod:`.precheck` (overrides
checked before anything is written), one module per verb (:mod:`.viz`, :mod:`.evaluate`,
:mod:`.export`).
"""

from snnrun.cli.command import main

__all__ = ["main"]
