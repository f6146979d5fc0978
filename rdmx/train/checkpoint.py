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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def restore_generator(generator: torch.nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """Load a checkpoint's generator weights, refusing non-finite or ill-fitting ones clearly."""
    state = ckpt["generator"]
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise IntegrityError(path, f"holds non-finite generator weights ({', '.join(bad[:3])})", "an rdmx checkpoint",
                             "restore a good copy, or start over with --fresh")
    try:
        generator.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise RdmxError(f"{path}: its generator weights do not fit this recipe's generator ({_first_line(exc)})") from None


def restore_training(ckpt: dict[str, Any], path: str | Path, *, generator, optimizer, balancer) -> int:
    """Restore generator, optimiser, balancer and RNG from a verified checkpoint; returns its step."""
    restore_generator(generator, ckpt, path)
    parts = (("optimizer", optimizer.load_state_dict if optimizer is not None else None),
             ("balancer", balancer.load_state_dict if balancer is not None else None),
             ("torch_rng", torch.set_rng_state))
    for key, load in parts:
        value = ckpt.get(key)
        if load is None or (key == "balancer" and value is None):
            continue
        if value is None:
            raise RdmxError(f"{path}: has no {key} state to resume from; start over with --fresh")
        try:
            load(value)
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise RdmxError(f"{path}: its {key} state cannot be restored ({_first_line(exc)}); "
                            f"start over with --fresh") from None
    cuda = ckpt.get("cuda_rng")  # on as many devices as both the checkpoint and this machine have
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[: min(len(cuda), torch.cuda.device_count())])
    return int(ckpt["step"])
