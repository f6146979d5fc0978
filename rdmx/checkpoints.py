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
from rdmx.train.sampling import generate

SAMPLE_SEED = 2024  # fixed noise for checkpoint sampling: comparable across checkpoints


BASE = "base"  # a "checkpoint" meaning the recipe's generator as built (its pretrained weights, step 0)


def apply_checkpoint(comp: Components, checkpoint: str | Path | None, fingerprint: str) -> dict[str, Any]:
    """Load a checkpoint's generator weights into ``comp`` (``None`` / ``"base"``: keep the built ones)."""
    if checkpoint is None or str(checkpoint) == BASE:
        return {"step": 0, "run_id": None}
    ckpt = load_checkpoint(checkpoint, fingerprint)
    comp.generator.load_state_dict(ckpt["generator"])
    return ckpt


def load_generator(resolved: ResolvedRecipe, checkpoint: str | Path | None) -> tuple[Components, dict[str, Any]]:
    """Components of the recipe with the checkpoint's generator weights loaded (``None`` or ``"base"``:
    the generator as the recipe builds it, e.g. a pretrained teacher before post-training)."""
    comp = build_components(resolved)
    ckpt = apply_checkpoint(comp, checkpoint, resolved.fingerprint)
    comp.generator.eval()
    return comp, ckpt


def _state(generator) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in generator.state_dict().items()}


def _baseline_samples(comp: Components, weights: dict[str, torch.Tensor] | None, n: int, seed: int, chunk: int,
                      cond: torch.Tensor | None, generator=None) -> torch.Tensor:
    """The baseline's samples from the same noise and conditions: ``generator`` (a separately built
    baseline), or the evaluated generator with ``weights`` swapped in, then restored."""
    if generator is not None:
        if weights is not None:
            generator.load_state_dict(weights)
        if comp.generator.prompts:
            generator.set_prompts(comp.generator.prompts)
        images, _ = generate(generator, n, seed, chunk, comp.device, cond=cond)
        return images.cpu()
    gen = comp.generator
    current = _state(gen)
    gen.load_state_dict(weights)
    images, _ = generate(gen, n, seed, chunk, comp.device, cond=cond)
    gen.load_state_dict(current)
    return images.cpu()


def evaluate_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path | None, *, n: int | None = None,
                        out: Path | None = None, suite=None, progress: bool = True,
                        log: bool = True, prompts: list[str] | None = None, per_prompt: int = 1,
                        baseline: str | Path | None = None, baseline_set: list[str] | None = None):
    """SW_rK (all / training / held-out encoders), MMDr and FD of a checkpoint's samples
    (``suite`` overrides the recipe's ``eval.suite``); the text-joint SW_r / MMDr too when the
    recipe matches the text-joint law.

    ``prompts`` (text-to-image): the samples are ``per_prompt`` images of every prompt (so the
    recipe's metrics, e.g. PickScore, score them against their prompts); ``baseline`` (a checkpoint
    or ``"base"``) renders the same noise and prompts for win rates; ``baseline_set`` builds the
    baseline's generator from the recipe with these overrides (e.g. ``generator.steps=4``: the
    four-step teacher against the one-step student). Writes ``out/eval.json``; logs
    to the MLflow run that made the checkpoint when tracking is on."""
    from rdmx.reference.build import build_references
    from rdmx.train.evaluation import EVAL_NOISE_SALT, text_joint_eval
    from rdmx.train.loop import write_json_atomic

    r = resolved.recipe
    n = n or r.eval.n
    comp, _ = load_generator(resolved, None)
    baseline_weights, baseline_gen = None, None
    if baseline is not None and baseline_set:
        from rdmx.recipe import with_overrides
        from rdmx.train.build import build_generator

        baseline_gen = build_generator(with_overrides(resolved, baseline_set), comp.device)
        if str(baseline) != BASE:
            baseline_weights = load_checkpoint(baseline)["generator"]  # another recipe: no fingerprint check
    elif baseline is not None:
        baseline_weights = (_state(comp.generator) if str(baseline) == BASE
                            else load_checkpoint(baseline, resolved.fingerprint)["generator"])
    ckpt = apply_checkpoint(comp, checkpoint, resolved.fingerprint)
    cond = None
    if prompts is not None:
        comp.generator.set_prompts(prompts)
        cond = torch.arange(len(prompts), device=comp.device).repeat_interleave(per_prompt)
        n = len(cond)
    refs = build_references(
        comp.data, comp.encoders, None, cache_dir=r.reference.cache_dir, train_names=[], floors=None,
        eval_rows=n, seed=r.seed, device=comp.device, progress=progress,
        batch_size=r.reference.batch_size, num_workers=r.reference.workers,
    )
    r_eval = r.eval.model_copy(update={"n": n, "suite": list(suite or r.eval.suite)})
    chunk = r.train.micro_batch or r.train.batch
    reference = None
    if baseline is not None:
        reference = _baseline_samples(comp, baseline_weights, n, r_eval.seed + EVAL_NOISE_SALT, chunk, cond,
                                      generator=baseline_gen)
        del baseline_gen
    ev = evaluate_generator(comp.generator, comp.encoders, comp.roles, refs, r_eval, chunk=chunk, device=comp.device,
                            metrics=comp.metrics, data=comp.data, step=int(ckpt["step"]),
                            text=text_joint_eval(comp, r, refs), cond=cond, reference_samples=reference)
    result = ev.result
    result.settings["checkpoint"] = str(checkpoint)
    result.settings["step"] = int(ckpt["step"])
    if prompts is not None:
        result.settings["prompts"] = {"count": len(prompts), "per_prompt": per_prompt}
    if baseline is not None:
        result.settings["baseline"] = str(baseline) + (f" [{', '.join(baseline_set)}]" if baseline_set else "")
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


def sample_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path | None, *, n: int, out: Path,
                      columns: int = 8, seed: int = SAMPLE_SEED, prompts: list[str] | None = None) -> dict[str, Path]:
    """``n`` samples as PNG grids (one per 64 images, rows labelled with class names, or ``#i`` for
    prompt i of a text-to-image generator) and ``samples.npz`` (uint8 NHWC ``arr_0``, condition ids
    ``arr_1``). ``prompts`` replaces a text-to-image generator's pool (``prompts.txt`` lists them)."""
    r = resolved.recipe
    comp, _ = load_generator(resolved, checkpoint)
    if not comp.info.is_image:
        raise ValueError(f"rdmx sample writes images; this recipe's generator makes {comp.info.sample_shape} vectors")
    info = comp.info
    out = Path(out)
    paths: dict[str, Path] = {}
    if prompts is not None:
        comp.generator.set_prompts(prompts)
    pool = comp.generator.prompts
    count = info.num_classes or len(pool)
    cond = None
    if count:  # conditions in blocks of `columns`, so every grid row has one label
        cond = (torch.arange(n, device=comp.device) // columns) % count
    if pool:
        paths["prompts"] = _atomic_text(out / "prompts.txt", "".join(f"#{i}\t{p}\n" for i, p in enumerate(pool)))
    chunk = r.train.micro_batch or r.train.batch
    images, cond = generate(comp.generator, n, seed, chunk, comp.device, cond=cond)
    paths["npz"] = save_npz(images, out / "samples.npz", cond)
    per_grid = columns * 8
    for i in range(0, n, per_grid):
        block = images[i : i + per_grid]
        ids = cond[i : i + per_grid].tolist() if cond is not None else None
        labels = None if ids is None else [info.class_names[c] if info.num_classes else f"#{c}" for c in ids]
        paths[f"grid{i // per_grid}"] = save_grid(block, out / f"grid-{i // per_grid:04d}.png", labels=labels,
                                                  columns=columns, scale=max(1, 64 // images.shape[-1]))
    return paths


def geneval_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path | None, metadata_path: str | Path, *,
                       out: Path, per_prompt: int = 4) -> Path:
    """The GenEval folder layout (``rdmx.samples.write_geneval``) for a checkpoint (or the base generator)."""
    from rdmx.samples import read_geneval_metadata, write_geneval

    metadata = read_geneval_metadata(metadata_path)
    comp, _ = load_generator(resolved, checkpoint)
    batch = resolved.recipe.train.micro_batch or resolved.recipe.train.batch
    return write_geneval(comp.generator, metadata, out, per_prompt=per_prompt, device=comp.device, batch=batch)


def _atomic_text(path: Path, text: str) -> Path:
    from rdmx.samples import _atomic

    return _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
