"""Shared test helpers: run the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rdmx(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 300):
    """Run ``python -m rdmx.cli ARGS``; returns the CompletedProcess (text mode)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "RDMX_DEBUG": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rdmx.cli", *args], capture_output=True, text=True, env=full_env,
        cwd=cwd or ROOT, timeout=timeout,
    )

