"""Atomic, complete checkpoints: model, optimiser, balancer, RNG, step, tracking run id."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rdmx.errors import RdmxError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path, *, step, generator, optimizer, balancer, fingerprint, run_id, extra=None) -> None:
    atomic_torch_save(
        {
            "format": "rdmx-checkpoint-1",
            "step": step,
            "fingerprint": fingerprint,
            "run_id": run_id,
            "generator": generator.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "balancer": balancer.state_dict() if balancer is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "extra": extra or {},
        },
        path,
    )


def restore_rng(ckpt: dict[str, Any]) -> None:
    """Put back the CPU and CUDA generator states a checkpoint saved (CUDA: on as many devices as
    both the checkpoint and this machine have)."""
    torch.set_rng_state(ckpt["torch_rng"])
    cuda = ckpt.get("cuda_rng")
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all(list(cuda)[:n])


def load_checkpoint(path: str | Path, fingerprint: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RdmxError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise RdmxError(f"{path}: not a readable rdmx checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "rdmx-checkpoint-1":
        raise RdmxError(f"{path}: not an rdmx checkpoint")
    if fingerprint is not None and ckpt["fingerprint"] != fingerprint:
        raise RdmxError(
            f"{path}: checkpoint belongs to recipe fingerprint {ckpt['fingerprint']}, "
            f"not {fingerprint}; use the recipe that made it (rdmx show prints fingerprints)"
        )
    return ckpt
