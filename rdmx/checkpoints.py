"""Work on a trained checkpoint: ``rdmx eval`` (off-objective metrics) and ``rdmx sample``
(labelled PNG grids and an ADM-compatible ``.npz``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rdmx.recipe import ResolvedRecipe
from rdmx.samples import NpzStream, class_plan, grid_rows, save_grid, to_uint8_nhwc
from rdmx.train.build import Components, build_components
from rdmx.train.checkpoint import load_checkpoint, restore_generator
from rdmx.train.evaluation import evaluate_generator

SAMPLE_SEED = 2024  # fixed noise for checkpoint sampling: comparable across checkpoints


def load_generator(resolved: ResolvedRecipe, checkpoint: str | Path | None) -> tuple[Components, dict[str, Any]]:
    """Components of the recipe with the checkpoint's generator weights loaded; without a
    checkpoint, the generator as the recipe builds it (its warm start: step 0)."""
    ckpt = load_checkpoint(checkpoint, resolved.fingerprint) if checkpoint is not None else {"step": 0, "run_id": None}
    comp = build_components(without_warm_start(resolved) if checkpoint is not None else resolved)
    if checkpoint is not None:
        restore_generator(comp.generator, ckpt, checkpoint)
    comp.generator.eval()
    return comp, ckpt


def without_warm_start(resolved: ResolvedRecipe) -> ResolvedRecipe:
    """The recipe with its generator's ``weights`` set to "random", for building a generator that a
    checkpoint then overwrites: its warm start (3.8 GB for pMF-H) need not be read, nor present."""
    cfg = resolved.config("generator")
    if "weights" not in type(cfg).model_fields:
        return resolved
    configs = {**resolved.configs, "generator": cfg.model_copy(update={"weights": "random"})}
    return ResolvedRecipe(resolved.recipe, configs, resolved.source)


def evaluate_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path | None, *, n: int | None = None,
                        out: Path | None = None, suite=None, progress: bool = True,
                        log: bool = True, fid: bool = False):
    """SW_rK (all / training / held-out encoders), MMDr and FD of a checkpoint's samples
    (``suite`` overrides the recipe's ``eval.suite``; ``fid`` adds FID-50K with torch-fidelity's
    Inception); ``checkpoint = None`` evaluates the recipe's own generator (e.g. the released pMF-H
    before post-training).

    Writes ``out/eval.json``; logs to the MLflow run that made the checkpoint when tracking is on."""
    from rdmx.reference.build import build_references
    from rdmx.files import write_json

    r = resolved.recipe
    # --n replaces the recipe's sample counts (SW_rK and MMDr alike): a quick, labelled evaluation
    r_eval = r.eval.model_copy(update={"suite": list(suite or r.eval.suite)} if not n else
                               {"n": n, "mmd_n": n, "suite": list(suite or r.eval.suite)})
    comp, ckpt = load_generator(resolved, checkpoint)
    if fid:  # FID-50K as the literature computes it (rdmx-fid's `fid` metric), beside SW_rK
        from rdmx.plugins import get_plugins

        options = {"cache_dir": r.reference.cache_dir, **({"n": n} if n else {})}
        comp.metrics.append(get_plugins().get("metrics", "fid", where="rdmx eval --fid").build(options))
    refs = build_references(
        comp.data, comp.encoders, None, cache_dir=r.reference.cache_dir, train_names=[], floors=None,
        eval_rows=r_eval.bank_rows(), seed=r.seed, device=comp.device, progress=progress,
        batch_size=r.reference.batch_size, num_workers=r.reference.workers,
    )
    ev = evaluate_generator(comp.generator, comp.encoders, comp.roles, refs, r_eval,
                            chunk=r.train.micro_batch or r.train.batch, device=comp.device,
                            metrics=comp.metrics, data=comp.data, step=int(ckpt["step"]))
    result = ev.result
    result.settings["checkpoint"] = str(checkpoint) if checkpoint is not None else "(the recipe's generator)"
    result.settings["step"] = int(ckpt["step"])
    if out is not None:
        write_json(Path(out) / "eval.json", result.to_dict())
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


def sample_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path | None, *, n: int, out: Path,
                      columns: int = 8, seed: int = SAMPLE_SEED, max_grid_rows: int = 32) -> dict[str, Path]:
    """``n`` samples as ``samples.npz`` (ADM layout: uint8 NHWC ``arr_0``, class ids ``arr_1`` when
    class-conditional) and labelled PNG grids (8 rows of ``columns`` per grid, one class per row,
    up to ``max_grid_rows`` classes spread over those sampled).

    Classes come from :func:`rdmx.samples.class_plan` (balanced: 50 per class for 50k ImageNet
    samples). Generation runs in chunks of the recipe's micro batch and the archive is streamed,
    so memory holds one chunk of images whatever ``n``."""
    r = resolved.recipe
    comp, _ = load_generator(resolved, checkpoint)
    if not comp.info.is_image:
        raise ValueError(f"rdmx sample writes images; this recipe's generator makes {comp.info.sample_shape} vectors")
    info, gen = comp.info, comp.generator
    cond = class_plan(n, info.num_classes, columns) if info.num_classes else None
    rows = grid_rows(cond, columns, max_grid_rows) if cond is not None else [
        torch.arange(s, min(s + columns, n)) for s in range(0, min(n, columns * max_grid_rows), columns)]
    wanted = {int(i) for row in rows for i in row}
    kept: dict[int, torch.Tensor] = {}
    chunk = r.train.micro_batch or r.train.batch
    g = torch.Generator().manual_seed(seed)
    out = Path(out)
    size = info.sample_shape[1:]
    with torch.no_grad(), NpzStream(out / "samples.npz", n, (*size, 3), cond) as npz:
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            noise = gen.sample_noise(m, g, comp.device)
            images = gen(noise, None if cond is None else cond[s : s + m].to(comp.device)).float().cpu()
            npz.write(to_uint8_nhwc(images))
            kept.update({i: images[i - s] for i in range(s, s + m) if i in wanted})
    paths = {"npz": out / "samples.npz"}
    per_grid = 8
    for k in range(0, len(rows), per_grid):
        block = rows[k : k + per_grid]
        images = torch.stack([kept[int(i)] for row in block for i in row])
        labels = None
        if cond is not None:
            labels = [info.class_names[int(cond[i])] if info.class_names else str(int(cond[i])) for row in block for i in row]
        # each row is padded to full width so that row labels line up
        images, labels = _pad_rows(block, images, labels, columns)
        paths[f"grid{k // per_grid}"] = save_grid(images, out / f"grid-{k // per_grid:04d}.png", labels=labels,
                                                  columns=columns, scale=max(1, 64 // images.shape[-1]))
    return paths


def _pad_rows(rows, images, labels, columns):
    """Rows shorter than ``columns`` get blank tiles, so each grid row is one class."""
    out, lab, pos = [], [], 0
    for row in rows:
        k = len(row)
        out.append(images[pos : pos + k])
        if k < columns:
            out.append(torch.ones(columns - k, *images.shape[1:]))
        if labels is not None:
            lab += labels[pos : pos + k] + [labels[pos]] * (columns - k)
        pos += k
    return torch.cat(out), (lab if labels is not None else None)
