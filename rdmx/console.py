"""The rich console every command prints through: full width in a terminal, 200 columns when piped."""

from __future__ import annotations

import sys


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 200)


def warn(message: str) -> None:
    """A one-line warning on stderr (problems rdmx handled itself, e.g. a damaged cache file rebuilt)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
