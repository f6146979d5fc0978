"""The single-file checkpoint format of rdmx 0.1 (``rdmx-checkpoint-1``, ``checkpoints/last.pt``):
still read, so runs and checkpoints made before the sharded format resume and evaluate; written
only by benchmarks (the gathered save they compare against) and tests.

One file, written by rank 0: model, optimiser, balancer, RNG, step, tracking run id and the run's
history, with the sha256 of its content (:func:`rdmx.files.save_torch`). A generator sharded with
FSDP2 was saved as its full state dict gathered on rank 0 (``training_state``); a resumed sharded
run re-shards it (rank 0 reads the file and broadcasts every tensor into the other ranks' shards).
The sharded format that replaces it: :mod:`rdmx.train.checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.files import IntegrityError, load_torch, save_torch

FORMAT = "rdmx-checkpoint-1"
REQUIRED = ("step", "fingerprint", "generator")


def training_state(generator, optimizer, sharded: bool) -> tuple[dict, dict | None, str]:
    """``(generator state, optimiser state, optimiser key format)``; a collective when ``sharded``
    (every rank calls it; rank 0 receives the full tensors, on the CPU)."""
    if not sharded:
        model = generator if isinstance(generator, dict) else generator.state_dict()
        return model, (optimizer.state_dict() if optimizer is not None else None), "ids"
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model = get_model_state_dict(generator, options=opts)
    optim = get_optimizer_state_dict(generator, optimizer, options=opts) if optimizer is not None else None
    return model, optim, "names"


def restore_sharded_state(generator, optimizer, ckpt: dict | None, path: str | Path) -> None:
    """Load a checkpoint's generator and optimiser state into a generator sharded with FSDP2: every
    rank calls it, rank 0 with the verified checkpoint, the others with None (rank 0 broadcasts
    every tensor into their shards). An unsharded generator: :func:`restore_training`."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    main = ckpt is not None
    if main:
        _refuse_non_finite(ckpt["generator"], path)
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
    save_torch(
        path,
        {
            "format": FORMAT,
            "step": int(step),
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
    )


def is_rdmx_file(path: str | Path) -> bool:
    """Whether ``path`` is a single-file rdmx checkpoint (read memory-mapped: cheap for a big file)."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable as a torch zip file: not one of rdmx's
        return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: str | Path, fingerprint: str | None = None) -> dict[str, Any]:
    """A verified checkpoint; refused when damaged, of another format, or of another recipe."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise RdmxError(f"{path}: not a checkpoint file (a folder?); a checkpoint is a .pt file, e.g. "
                        f"RUN/checkpoints/last.pt")
    if not path.is_file():
        raise RdmxError(f"checkpoint not found: {path}")
    remedy = ("it cannot be used; restore a good copy, or start the run over with --fresh "
              "(rdmx run ... --fresh)")
    try:
        ckpt = load_torch(path, what="an rdmx checkpoint", remedy=remedy, mmap=True)  # tensors paged in on use
    except IntegrityError as exc:
        if "checksum" not in exc.problem:  # not rdmx's file at all (empty, cut, another format, a pickle payload)
            raise RdmxError(f"{path}: not a readable rdmx checkpoint: it {exc.problem}; it was refused") from None
        raise
    if ckpt.get("format") != FORMAT:
        raise RdmxError(f"{path}: not an rdmx checkpoint")
    missing = [k for k in REQUIRED if k not in ckpt]
    step = ckpt.get("step")
    if missing or not isinstance(step, int) or step < 0 or not isinstance(ckpt.get("generator"), dict):
        raise IntegrityError(path, f"incomplete checkpoint (missing or malformed: {', '.join(missing) or 'step/generator'})",
                             "an rdmx checkpoint", remedy)
    if fingerprint is not None and ckpt["fingerprint"] != fingerprint:
        made_by = path.parent.parent / "recipe.resolved.toml"  # written in every run (and sweep cell) folder
        hint = f": {made_by}" if made_by.is_file() else " (rdmx show prints fingerprints)"
        raise RdmxError(
            f"{path}: checkpoint belongs to recipe fingerprint {ckpt['fingerprint']}, "
            f"not {fingerprint}; use the recipe that made it{hint}"
        )
    return ckpt


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _refuse_non_finite(state: dict[str, Any], path: str | Path) -> None:
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise IntegrityError(path, f"holds non-finite generator weights ({', '.join(bad[:3])})", "an rdmx checkpoint",
                             "restore a good copy, or start over with --fresh")


def restore_generator(generator: torch.nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """Load a checkpoint's generator weights, refusing non-finite or ill-fitting ones clearly."""
    state = ckpt["generator"]
    _refuse_non_finite(state, path)
    try:
        generator.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise RdmxError(f"{path}: its generator weights do not fit this recipe's generator ({_first_line(exc)})") from None


def restore_training(ckpt: dict[str, Any], path: str | Path, *, generator, optimizer, balancer) -> int:
    """Restore generator, optimiser, balancer and RNG from a verified checkpoint into an unsharded
    generator (a sharded one: :func:`restore_sharded_state`); returns its step."""
    restore_generator(generator, ckpt, path)
    load_optimizer = None
    if optimizer is not None:
        def load_optimizer(state):
            if ckpt.get("optimizer_keys", "ids") == "names":  # written by a sharded run: keyed by parameter name
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

                set_optimizer_state_dict(generator, optimizer, state, options=StateDictOptions(full_state_dict=True))
            else:
                optimizer.load_state_dict(state)
    parts = (("optimizer", load_optimizer),
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
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError, RdmxError) as exc:
            raise RdmxError(f"{path}: its {key} state cannot be restored ({_first_line(exc)}); "
                            f"start over with --fresh") from None
    cuda = ckpt.get("cuda_rng")  # on as many devices as both the checkpoint and this machine have
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[: min(len(cuda), torch.cuda.device_count())])
    return int(ckpt["step"])
