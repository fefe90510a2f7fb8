"""Configs shipped as the package ``snnrun.conf`` (top-level ``conf/`` in the repo)."""
