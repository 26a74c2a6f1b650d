"""The ``sla-nas`` command line: each subcommand calls one library function and prints."""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
