"""The installed snnrun version (recorded in run dirs and exports)."""

__version__ = "0.1.0"
