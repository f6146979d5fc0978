"""Atomic, complete, checksummed checkpoints: model, optimiser, balancer, RNG, step, tracking run
id and the run's history (step-0 evaluation, skipped steps, wall time, evaluations so far).

A checkpoint whose bytes do not match the sha256 written with it is refused (never used
silently): see :mod:`rdmx.files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.files import IntegrityError, load_torch, save_torch

FORMAT = "rdmx-checkpoint-1"
REQUIRED = ("step", "fingerprint", "generator")


def save_checkpoint(path, *, step, generator, optimizer, balancer, fingerprint, run_id, extra=None) -> None:
    state = generator if isinstance(generator, dict) else generator.state_dict()
    save_torch(
        path,
        {
            "format": FORMAT,
            "step": int(step),
            "fingerprint": fingerprint,
            "run_id": run_id,
            "generator": state,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "balancer": balancer.state_dict() if balancer is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "extra": extra or {},
        },
    )


def load_checkpoint(path: str | Path, fingerprint: str | None = None) -> dict[str, Any]:
    """A verified checkpoint; refused when damaged, of another format, or of another recipe."""
    path = Path(path)
    if not path.is_file():
        raise RdmxError(f"checkpoint not found: {path}")
    remedy = ("it cannot be used; restore a good copy, or start the run over with --fresh "
              "(rdmx run ... --fresh)")
    try:
        ckpt = load_torch(path, what="an rdmx checkpoint", remedy=remedy)
    except IntegrityError as exc:
        if "not a readable file" in exc.problem:
            raise RdmxError(f"{path}: not a readable rdmx checkpoint ({exc.problem})") from None
        raise
    if ckpt.get("format") != FORMAT:
        raise RdmxError(f"{path}: not an rdmx checkpoint")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing or not isinstance(ckpt.get("step"), int) or not isinstance(ckpt.get("generator"), dict):
        raise IntegrityError(path, f"incomplete checkpoint (missing or malformed: {', '.join(missing) or 'step/generator'})",
                             "an rdmx checkpoint", remedy)
    if fingerprint is not None and ckpt["fingerprint"] != fingerprint:
        raise RdmxError(
            f"{path}: checkpoint belongs to recipe fingerprint {ckpt['fingerprint']}, "
            f"not {fingerprint}; use the recipe that made it (rdmx show prints fingerprints)"
        )
    return ckpt
