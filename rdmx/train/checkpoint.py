"""Atomic, complete checkpoints: model, optimiser, balancer, RNG, step, tracking run id.

One file, written by rank 0, whatever the run's layout: a generator sharded with FSDP2 is saved
as its full state dict gathered on rank 0 (``torch.distributed.checkpoint.state_dict``, CPU
offload, optimiser state keyed by parameter name), so ``rdmx eval`` / ``rdmx sample`` load it in
one process and a resumed sharded run re-shards it exactly (rank 0 reads the file and broadcasts
every tensor into the other ranks' shards)."""

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


def training_state(generator, optimizer, sharded: bool) -> tuple[dict, dict | None, str]:
    """``(generator state, optimiser state, optimiser key format)``; a collective when ``sharded``
    (every rank calls it; rank 0 receives the full tensors, on the CPU)."""
    if not sharded:
        return generator.state_dict(), (optimizer.state_dict() if optimizer is not None else None), "ids"
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model = get_model_state_dict(generator, options=opts)
    optim = get_optimizer_state_dict(generator, optimizer, options=opts) if optimizer is not None else None
    return model, optim, "names"


def restore_training_state(generator, optimizer, ckpt: dict | None, sharded: bool) -> None:
    """Load a checkpoint's generator and optimiser state. Sharded: every rank calls it, rank 0 with
    the checkpoint, the others with None (rank 0 broadcasts into their shards)."""
    if not sharded:
        generator.load_state_dict(ckpt["generator"])
        if ckpt.get("optimizer_keys", "ids") == "names":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(generator, optimizer, ckpt["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(ckpt["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    main = ckpt is not None
    set_model_state_dict(generator, ckpt["generator"] if main else {}, options=opts)
    optim = ckpt["optimizer"] if main else {}
    if main and ckpt.get("optimizer_keys", "ids") == "ids":
        optim = _named_optimizer_state(generator, optim)
    set_optimizer_state_dict(generator, optimizer, optim, options=opts)


def _named_optimizer_state(generator, state: dict) -> dict:
    """``optimizer.state_dict()`` (parameters by index) keyed by parameter name instead."""
    names = [n for n, p in generator.named_parameters() if p.requires_grad]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {names[i]: v for i, v in state["state"].items()}, "param_groups": groups}


def save_checkpoint(path, *, step, generator, optimizer, balancer, fingerprint, run_id, extra=None,
                    state: tuple[dict, dict | None, str] | None = None) -> None:
    """``state``: the output of :func:`training_state` when it was gathered already (sharded runs)."""
    model, optim, keys = state if state is not None else training_state(generator, optimizer, False)
    atomic_torch_save(
        {
            "format": "rdmx-checkpoint-1",
            "step": step,
            "fingerprint": fingerprint,
            "run_id": run_id,
            "generator": model,
            "optimizer": optim,
            "optimizer_keys": keys,
            "balancer": balancer.state_dict() if balancer is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "extra": extra or {},
        },
        path,
    )


def load_checkpoint(path: str | Path, fingerprint: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RdmxError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors read on use
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
