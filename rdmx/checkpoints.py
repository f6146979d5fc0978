"""Work on a trained checkpoint: ``rdmx eval`` (off-objective metrics) and ``rdmx sample``
(labelled PNG grids and an ADM-compatible ``.npz``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rdmx.recipe import ResolvedRecipe
from rdmx.samples import save_grid, save_npz
from rdmx.train.build import Components, build_components
from rdmx.train.checkpoint import load_checkpoint
from rdmx.train.evaluation import evaluate_generator
from rdmx.train.loop import eval_chunk
from rdmx.train.micro_batch import out_of_memory_hint
from rdmx.train.sampling import generate

SAMPLE_SEED = 2024  # fixed noise for checkpoint sampling: comparable across checkpoints


def checkpoint_chunk(resolved: ResolvedRecipe, ckpt: dict[str, Any]) -> int:
    """Samples generated at once from a checkpoint: ``eval.chunk``, else 4 × the micro batch the run
    used (recorded in the checkpoint when it was probed with "auto"; 64 when unknown)."""
    t = resolved.recipe.train
    micro = t.micro_batch if t.micro_batch != "auto" else ckpt.get("extra", {}).get("micro_batch", 64)
    return eval_chunk(resolved.recipe, micro or t.batch)


def load_generator(resolved: ResolvedRecipe, checkpoint: str | Path) -> tuple[Components, dict[str, Any]]:
    """Components of the recipe with the checkpoint's generator weights loaded."""
    ckpt = load_checkpoint(checkpoint, resolved.fingerprint)
    comp = build_components(resolved)
    comp.generator.load_state_dict(ckpt["generator"])
    comp.generator.eval()
    return comp, ckpt


def evaluate_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path, *, n: int | None = None,
                        out: Path | None = None, suite=None, progress: bool = True,
                        log: bool = True):
    """SW_rK (all / training / held-out encoders), MMDr and FD of a checkpoint's samples
    (``suite`` overrides the recipe's ``eval.suite``).

    Writes ``out/eval.json``; logs to the MLflow run that made the checkpoint when tracking is on."""
    from rdmx.reference.build import build_references
    from rdmx.train.loop import write_json_atomic

    r = resolved.recipe
    n = n or r.eval.n
    comp, ckpt = load_generator(resolved, checkpoint)
    refs = build_references(
        comp.data, comp.encoders, None, cache_dir=r.reference.cache_dir, train_names=[], floors=None,
        eval_rows=n, seed=r.seed, device=comp.device, progress=progress,
        batch_size=r.reference.batch_size, num_workers=r.reference.workers,
    )
    r_eval = r.eval.model_copy(update={"n": n, "suite": list(suite or r.eval.suite)})
    chunk = checkpoint_chunk(resolved, ckpt)
    with out_of_memory_hint("rdmx eval", "eval.chunk", chunk):
        ev = evaluate_generator(comp.generator, comp.encoders, comp.roles, refs, r_eval, chunk=chunk,
                                device=comp.device, metrics=comp.metrics, data=comp.data, step=int(ckpt["step"]))
    result = ev.result
    result.settings["checkpoint"] = str(checkpoint)
    result.settings["step"] = int(ckpt["step"])
    if out is not None:
        write_json_atomic(Path(out) / "eval.json", result.to_dict())
    if log and r.tracking.backend != "none":
        from rdmx.track.base import make_tracker

        tracker = make_tracker(r.tracking)
        tracker.start(f"{r.name}-eval", {}, run_id=ckpt.get("run_id"))
        try:
            tracker.log_metrics({f"eval/{k}": v for k, v in ev.scalars().items()}, int(ckpt["step"]))
            if out is not None:
                tracker.log_artifact(Path(out) / "eval.json", "eval")
        finally:
            tracker.end()
        result.settings["run_id"] = tracker.run_id or ckpt.get("run_id")
    return result


def sample_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path, *, n: int, out: Path,
                      columns: int = 8, seed: int = SAMPLE_SEED) -> dict[str, Path]:
    """``n`` samples as PNG grids (one per 64 images, rows labelled with class names) and
    ``samples.npz`` (uint8 NHWC ``arr_0``, labels ``arr_1`` when class-conditional)."""
    r = resolved.recipe
    comp, ckpt = load_generator(resolved, checkpoint)
    if not comp.info.is_image:
        raise ValueError(f"rdmx sample writes images; this recipe's generator makes {comp.info.sample_shape} vectors")
    info = comp.info
    cond = None
    if info.num_classes:  # classes in blocks of `columns`, so every grid row has one label
        cond = (torch.arange(n, device=comp.device) // columns) % info.num_classes
    chunk = checkpoint_chunk(resolved, ckpt)
    with out_of_memory_hint("rdmx sample", "eval.chunk", chunk):
        images, cond = generate(comp.generator, n, seed, chunk, comp.device, cond=cond)
    out = Path(out)
    paths = {"npz": save_npz(images, out / "samples.npz", cond)}
    per_grid = columns * 8
    for i in range(0, n, per_grid):
        block = images[i : i + per_grid]
        labels = [info.class_names[c] for c in cond[i : i + per_grid].tolist()] if cond is not None else None
        paths[f"grid{i // per_grid}"] = save_grid(block, out / f"grid-{i // per_grid:04d}.png", labels=labels,
                                                  columns=columns, scale=max(1, 64 // images.shape[-1]))
    return paths
