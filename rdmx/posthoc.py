"""``rdmx ema``: EDM2's post-hoc EMA, reconstructed after training from the power-function profiles
a run tracked (``[train.ema] posthoc``) and snapshotted at its milestones (rdmx.train.ema has the
maths). Each reconstruction is written as a sealed checkpoint (the snapshot's raw weights plus the
reconstructed average as its EMA) that ``rdmx eval`` / ``sample`` / ``export`` take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.train.checkpoint import Checkpoint, open_checkpoint, scan
from rdmx.train.ema import profile_name, profile_residual, sigma_rel_to_gamma, solve_posthoc

PREFIX = "ema-posthoc-"


@dataclass
class Snapshot:
    ckpt: Checkpoint
    key: str  # the profile's checkpoint entry
    gamma: float
    t: int  # the profile's update count at the snapshot


def snapshots(run: Path, sigma_rels: list[float] | None = None) -> list[Snapshot]:
    """Every post-hoc profile snapshot in a run's sealed checkpoints (``sigma_rels``: only these)."""
    found = []
    for _, folder, sealed in scan(Path(run) / "checkpoints"):
        if not sealed:
            continue
        ckpt = open_checkpoint(folder)
        profiles = (ckpt.small.get("ema") or {}).get("profiles") or {}
        updates = int((ckpt.small.get("ema") or {}).get("updates", 0))
        for key in ckpt.keys:
            if key.startswith(PREFIX) and profiles.get(key) is not None and updates > 0:
                if sigma_rels is None or key in {profile_name(s) for s in sigma_rels}:
                    found.append(Snapshot(ckpt, key, float(profiles[key]), updates))
    return found


def _template(ckpt: Checkpoint, key: str) -> dict[str, torch.Tensor]:
    """Empty tensors shaped like the entry ``key`` of a checkpoint (from DCP's metadata)."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(ckpt.path / "model")).read_metadata().state_dict_metadata
    prefix = key + "."
    return {k[len(prefix):]: torch.empty(tuple(v.size), dtype=v.properties.dtype)
            for k, v in meta.items() if k.startswith(prefix) and hasattr(v, "size")}


def reconstruct(run: str | Path, sigma_rel: float, *, step: int | None = None, profiles: list[float] | None = None,
                out: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The post-hoc EMA of width ``sigma_rel`` at the snapshot of ``step`` (default: the newest),
    from the snapshots of ``profiles`` (default: all); returns (checkpoint folder, report)."""
    from rdmx.train.checkpointer import Checkpointer
    from rdmx.train.distributed import DistContext

    run = Path(run)
    found = snapshots(run, profiles)
    if not found:
        raise RdmxError(f"{run}: no post-hoc EMA snapshots (a run with [train.ema] posthoc = [...] keeps them at its "
                        f"milestones, train.keep_every)")
    steps = sorted({s.ckpt.step for s in found})
    at = steps[-1] if step is None else step
    if at not in steps:
        raise RdmxError(f"{run}: no snapshot at step {at}; snapshots: {', '.join(map(str, steps))}")
    base = next(s for s in found if s.ckpt.step == at)
    basis = [s for s in found if s.t <= base.t]
    target = (sigma_rel_to_gamma(sigma_rel), base.t)
    coef = solve_posthoc([(s.gamma, s.t) for s in basis], target)
    residual = profile_residual([(s.gamma, s.t) for s in basis], target, coef)
    template = _template(base.ckpt, base.key)
    acc = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in template.items()}
    for s, x in zip(basis, coef):
        if abs(x) < 1e-12:
            continue
        part = s.ckpt.read(s.key, template, "post-hoc EMA snapshot")
        for k, v in part.items():
            acc[k].add_(v.to(torch.float64), alpha=float(x))
    average = {k: v.to(template[k].dtype) for k, v in acc.items()}
    raw = base.ckpt.read("generator", _template(base.ckpt, "generator"))
    report = {"sigma_rel": sigma_rel, "gamma": target[0], "step": at, "t": base.t, "snapshots": len(basis),
              "coefficients": [float(x) for x in coef], "residual_mass": residual}
    folder = Path(out) if out is not None else run / "posthoc" / f"sigma-{sigma_rel:.3f}-step-{at:06d}"
    small = {**{k: v for k, v in base.ckpt.small.items() if k in ("fingerprint", "run_id", "extra", "balancer")},
             "sharded": False, "ema": {"updates": base.t, "posthoc": report}}
    Checkpointer(folder.parent, DistContext(), log=lambda m: None).save(
        at, {"generator": raw, "ema": average}, small, block=True, folder=folder)
    return folder, report


def sweep(run: str | Path, sigma_rels: list[float], **kw) -> list[tuple[Path, dict[str, Any]]]:
    return [reconstruct(run, s, **kw) for s in sigma_rels]

