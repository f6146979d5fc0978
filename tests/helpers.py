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



def run_single_and_ranks(worker: list[str], single_args: list[str], rank_args: list[str], world: int = 2,
                         timeout: float = 900, cwd: str | Path | None = ROOT) -> None:
    """Run ``worker`` once as a plain process, then as ``world`` torchrun-style ranks (gloo, CPU,
    one free local port); every process must exit 0 (its stderr tail is the failure message)."""
    import socket

    base = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    base.pop("WORLD_SIZE", None)
    single = subprocess.run([*worker, *single_args], env=base, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    assert single.returncode == 0, single.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [subprocess.Popen([*worker, *rank_args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**base, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world),
                                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
