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



def killed_after_checkpoint(at: int):
    """A Trainer that is killed (KeyboardInterrupt) right after its checkpoint of step ``at``."""
    from rdmx.train.loop import Trainer

    class Killed(Trainer):
        def checkpoint(self, step, **kw):
            path = super().checkpoint(step, **kw)
            if step == at:
                raise KeyboardInterrupt
            return path

    return Killed


def free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def rank_env(rank: int, world: int, port: str) -> dict[str, str]:
    """The variables torchrun sets for one rank (one node, gloo on 127.0.0.1)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}


def worker_env() -> dict[str, str]:
    base = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RDMX_DEBUG": ""}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        base.pop(key, None)
    return base


def start_ranks(cmd: list[str], world: int, cwd: str | Path | None = ROOT) -> list[subprocess.Popen]:
    """``world`` torchrun-style ranks of ``cmd`` (a plain process when ``world`` is 1), started."""
    base = worker_env()
    port = free_port()
    envs = [base] if world == 1 else [{**base, **rank_env(r, world, port)} for r in range(world)]
    return [subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for env in envs]


def run_ranks(cmd: list[str], world: int, timeout: float = 900, cwd: str | Path | None = ROOT,
              expect: int = 0) -> list[str]:
    """Run ``cmd`` as ``world`` ranks; every process must exit ``expect``; returns their stderr."""
    procs = start_ranks(cmd, world, cwd)
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == expect, f"exit {p.returncode}: {err[-3000:]}"
        errs.append(err)
    return errs


def run_single_and_ranks(worker: list[str], single_args: list[str], rank_args: list[str], world: int = 2,
                         timeout: float = 900, cwd: str | Path | None = ROOT) -> None:
    """Run ``worker`` once as a plain process, then as ``world`` torchrun-style ranks (gloo, CPU,
    one free local port); every process must exit 0 (its stderr tail is the failure message)."""
    run_ranks([*worker, *single_args], 1, timeout, cwd)
    run_ranks([*worker, *rank_args], world, timeout, cwd)
