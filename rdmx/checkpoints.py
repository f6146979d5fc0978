"""Work on a trained checkpoint: ``rdmx eval`` (off-objective metrics, PickScore win rates),
``rdmx sample`` (labelled PNG grids and an ADM-compatible ``.npz``) and the GenEval layout."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.recipe import ResolvedRecipe
from rdmx.samples import NpzStream, class_plan, grid_rows, save_grid, to_uint8_nhwc
from rdmx.train.build import Components, build_components
from rdmx.train.checkpoint import Checkpoint, open_checkpoint
from rdmx.train.evaluation import evaluate_generator
from rdmx.train.loop import eval_chunk
from rdmx.train.micro_batch import out_of_memory_hint
from rdmx.train.sampling import generate

SAMPLE_SEED = 2024  # fixed noise for checkpoint sampling: comparable across checkpoints
BASE = "base"  # a "checkpoint" meaning the recipe's generator as built (its pretrained weights, step 0)


def checkpoint_chunk(resolved: ResolvedRecipe, ckpt: Checkpoint | None) -> int:
    """Samples generated at once from a checkpoint: ``eval.chunk``, else 4 × the micro batch the run
    used (recorded in the checkpoint when it was probed with "auto"; 64 when unknown)."""
    t = resolved.recipe.train
    recorded = ckpt.extra.get("micro_batch", 64) if ckpt is not None else 64
    micro = t.micro_batch if t.micro_batch != "auto" else recorded
    return eval_chunk(resolved.recipe, micro or t.batch)


def is_base(checkpoint: str | Path | None) -> bool:
    return checkpoint is None or str(checkpoint) == BASE


def apply_checkpoint(comp: Components, checkpoint: str | Path | None, resolved: ResolvedRecipe,
                     weights: str = "auto") -> Checkpoint | None:
    """Load a checkpoint's generator weights into ``comp`` (``None`` / ``"base"``: keep the built
    ones and return None): its EMA or raw weights (``weights``: auto = the EMA when it has one;
    the choice is ``comp.weights``). A checkpoint is a sealed folder (or a run folder: its newest)
    or a 0.1 file."""
    comp.weights = "raw"
    if is_base(checkpoint):
        if weights == "ema":
            raise RdmxError("--weights ema needs a checkpoint (-c) of a run with [train.ema]")
        return None
    ckpt = open_for(comp.generator, checkpoint, resolved)
    comp.weights = ckpt.load_generator(comp.generator, weights)
    return ckpt


def open_for(generator, checkpoint: str | Path, resolved: ResolvedRecipe) -> Checkpoint:
    """An rdmx checkpoint (verified, of this recipe), or a file of another code base that the
    generator's plugin reads (``foreign_weights``: e.g. the paper's released ``.pth``), as a
    :class:`Checkpoint` of step 0 holding the generator's weights in this plugin's layout."""
    from rdmx.train.checkpoint import locate
    from rdmx.train.legacy_checkpoint import is_rdmx_file

    from rdmx.plugins import get_plugins

    path = locate(checkpoint)
    if not path.is_file() or is_rdmx_file(path):
        return open_checkpoint(path, resolved.fingerprint, recipe=resolved.to_dict())
    entry = get_plugins().get("generators", resolved.recipe.generator.name)
    reader = entry.meta_value("foreign_weights")
    if reader:
        import importlib

        module, _, name = reader.partition(":")
        state = getattr(importlib.import_module(module), name)(path, generator)
        if state is not None:
            return Checkpoint(path, 0, resolved.fingerprint, None, {"extra": {}}, legacy={"generator": state})
    who = f"generator '{entry.name}'"
    raise RdmxError(f"{path}: neither an rdmx checkpoint nor a weights file {who} can read; give a checkpoint folder "
                    f"(RUN/checkpoints/step-NNNNNN) or the run folder")


def step_of(ckpt: Checkpoint | None) -> int:
    return ckpt.step if ckpt is not None else 0


def load_generator(resolved: ResolvedRecipe, checkpoint: str | Path | None,
                   weights: str = "auto") -> tuple[Components, Checkpoint | None]:
    """Components of the recipe with the checkpoint's generator weights loaded (``weights``: see
    :func:`apply_checkpoint`); without a checkpoint (``None`` or ``"base"``), the generator as the
    recipe builds it (its warm start: step 0)."""
    comp = build_components(resolved if is_base(checkpoint) else without_warm_start(resolved))
    ckpt = apply_checkpoint(comp, checkpoint, resolved, weights)
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
                        out: Path | None = None, suite=None, progress: bool = True, log: bool = True,
                        fid: bool = False, prompts: list[str] | None = None, per_prompt: int = 1,
                        baseline: str | Path | None = None, baseline_set: list[str] | None = None,
                        weights: str = "auto", eval_set: list[str] | None = None, class_prompts: str | None = None):
    """SW_rK (all / training / held-out encoders), MMDr and FD of a checkpoint's samples
    (``suite`` overrides the recipe's ``eval.suite``; ``fid`` adds FID-50K with torch-fidelity's
    Inception); the text-joint SW_r / MMDr too when the recipe matches the text-joint law.
    ``checkpoint = None`` (or ``"base"``) evaluates the recipe's own generator (e.g. the released
    pMF-H or the FLUX.2 teacher before post-training).

    ``prompts`` (text-to-image): the samples are ``per_prompt`` images of every prompt (so the
    recipe's metrics, e.g. PickScore, score them against their prompts); ``baseline`` (a checkpoint
    or ``"base"``) renders the same noise and prompts for win rates; ``baseline_set`` builds the
    baseline's generator from the recipe with these overrides (e.g. ``generator.steps=4``: the
    four-step teacher against the one-step student). ``class_prompts`` (a class-conditional
    generator, e.g. "a photo of a {class}"): ``per_prompt`` samples of every class, which the metrics
    score against the class's prompt (the paper's Fig. 6). Writes ``out/eval.json``; logs to the
    MLflow run that made the checkpoint when tracking is on."""
    from rdmx.evaluate.protocol import NOT_PROTOCOL, eval_protocol
    from rdmx.files import write_json
    from rdmx.reference.build import build_references
    from rdmx.train.evaluation import EVAL_NOISE_SALT, text_joint_eval

    made_by = resolved  # the recipe the checkpoint must belong to
    if eval_set:  # evaluation-time settings (e.g. the release's PickScore protocol: generator.ctx_len=232)
        from rdmx.recipe import with_overrides

        resolved = with_overrides(resolved, eval_set)
    r = resolved.recipe
    # --n replaces the recipe's sample counts (SW_rK and MMDr alike): a quick, labelled evaluation
    r_eval = r.eval.model_copy(update={"suite": list(suite or r.eval.suite)} if not n else
                               {"n": n, "mmd_n": n, "suite": list(suite or r.eval.suite)})
    comp, _ = load_generator(resolved, None)
    if fid:  # FID-50K as the literature computes it (rdmx-fid's `fid` metric), beside SW_rK
        from rdmx.plugins import get_plugins

        options = {"cache_dir": r.reference.cache_dir, **({"n": n} if n else {})}
        comp.metrics.append(get_plugins().get("metrics", "fid", where="rdmx eval --fid").build(options))
    baseline_weights, baseline_gen = None, None
    if baseline is not None and baseline_set:
        from rdmx.recipe import with_overrides
        from rdmx.train.build import build_generator

        baseline_gen = build_generator(with_overrides(resolved, baseline_set), comp.device)
        if not is_base(baseline):  # another recipe: no fingerprint check; its weights must fit that generator
            baseline_weights = open_checkpoint(baseline).generator_state(baseline_gen)
    elif baseline is not None:
        baseline_weights = (_state(comp.generator) if is_base(baseline)
                            else open_for(comp.generator, baseline, made_by).generator_state(comp.generator))
    ckpt = apply_checkpoint(comp, checkpoint, made_by, weights)
    cond = None
    if prompts is not None:
        comp.generator.set_prompts(prompts)
        cond = torch.arange(len(prompts), device=comp.device).repeat_interleave(per_prompt)
        r_eval = r_eval.model_copy(update={"n": len(cond), "mmd_n": min(r_eval.mmd_n or len(cond), len(cond))})
    label_texts, names_from = None, None
    if class_prompts is not None:
        from rdmx.data.prompts import class_prompts as make_class_prompts

        label_texts, names_from = make_class_prompts(class_prompts, comp.info.num_classes, comp.info.class_names)
        cond = torch.arange(len(label_texts), device=comp.device).repeat_interleave(per_prompt)
        r_eval = r_eval.model_copy(update={"n": len(cond), "mmd_n": min(r_eval.mmd_n or len(cond), len(cond))})
    refs = build_references(
        comp.data, comp.encoders, None, cache_dir=r.reference.cache_dir, train_names=[], floors=None,
        eval_rows=r_eval.bank_rows(), seed=r.seed, device=comp.device, progress=progress,
        batch_size=r.reference.batch_size, num_workers=r.reference.workers, **r.reference.real_rows(r_eval),
    )
    chunk = checkpoint_chunk(resolved, ckpt)
    reference = None
    with out_of_memory_hint("rdmx eval", "eval.chunk", chunk):
        if baseline is not None:
            reference = _baseline_samples(comp, baseline_weights, r_eval.n, r_eval.seed + EVAL_NOISE_SALT, chunk,
                                          cond, generator=baseline_gen)
            del baseline_gen
        ev = evaluate_generator(comp.generator, comp.encoders, comp.roles, refs, r_eval, chunk=chunk,
                                device=comp.device, metrics=comp.metrics, data=comp.data, step=step_of(ckpt),
                                text=text_joint_eval(comp, r, refs), cond=cond, reference_samples=reference,
                                label_texts=label_texts)
    result = ev.result
    result.settings["checkpoint"] = str(checkpoint) if not is_base(checkpoint) else "(the recipe's generator)"
    result.settings["step"] = step_of(ckpt)
    result.settings["weights"] = comp.weights  # the EMA or the raw weights
    if eval_set:
        result.settings["eval_set"] = list(eval_set)
    if prompts is not None:
        result.settings["prompts"] = {"count": len(prompts), "per_prompt": per_prompt}
    if class_prompts is not None:
        result.settings["class_prompts"] = {"template": class_prompts, "classes": len(label_texts),
                                            "per_class": per_prompt, "names": names_from}
    if baseline is not None:
        result.settings["baseline"] = str(baseline) + (f" [{', '.join(baseline_set)}]" if baseline_set else "")
    metric_blocks = [{k: v for k, v in m.items() if k not in NOT_PROTOCOL}
                     for m in resolved.to_dict()["eval"]["metrics"]] + ([{"name": "fid", "n": n}] if fid else [])
    result.settings["protocol"] = eval_protocol(
        r, r_eval, comp.encoders, comp.roles, refs, result.settings, metric_blocks,
        prompts=result.settings.get("prompts"), class_prompts=result.settings.get("class_prompts"),
        text_joint=result.settings.get("text_joint"))
    if out is not None:
        write_json(Path(out) / "eval.json", result.to_dict())
    if log and r.tracking.names() != ["none"]:
        from rdmx.track.base import make_tracker

        tracker = make_tracker(resolved)
        tracker.start(f"{r.name}-eval", {}, run_id=ckpt.run_id if ckpt is not None else None)
        try:
            tracker.log_metrics({f"eval/{k}": v for k, v in ev.scalars().items()}, step_of(ckpt))
            if out is not None:
                tracker.log_artifact(Path(out) / "eval.json", "eval")
        finally:
            tracker.end()
        result.settings["run_id"] = tracker.run_id or (ckpt.run_id if ckpt is not None else None)
    return result


def sample_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path | None, *, n: int, out: Path,
                      columns: int = 8, seed: int = SAMPLE_SEED, max_grid_rows: int = 32,
                      prompts: list[str] | None = None, weights: str = "auto") -> dict[str, Path]:
    """``n`` samples as ``samples.npz`` (ADM layout: uint8 NHWC ``arr_0``, condition ids ``arr_1`` when
    conditional) and labelled PNG grids (8 rows of ``columns`` per grid, one condition per row, up
    to ``max_grid_rows`` conditions spread over those sampled; ``#i`` is prompt i of a text-to-image
    generator, listed in ``prompts.txt``). ``prompts`` replaces a text-to-image generator's pool.

    Conditions come from :func:`rdmx.samples.class_plan` (balanced: 50 per class for 50k ImageNet
    samples). Generation runs in chunks of ``eval.chunk`` and the archive is streamed,
    so memory holds one chunk of images whatever ``n``."""
    from rdmx.files import atomic_write_text

    from rdmx.files import need_disk

    shape = resolved_sample_shape(resolved)
    if shape is not None:  # before anything is built or allocated: the archive's size on disk
        need_disk(out, n * math.prod(shape[1:]) * 3, f"--n {n} samples (samples.npz, uint8)")
    comp, ckpt = load_generator(resolved, checkpoint, weights)
    if not comp.info.is_image:
        raise ValueError(f"rdmx sample writes images; this recipe's generator makes {comp.info.sample_shape} vectors")
    info, gen = comp.info, comp.generator
    need_disk(out, n * math.prod(info.sample_shape[1:]) * 3, f"--n {n} samples (samples.npz, uint8)")
    out = Path(out)
    paths: dict[str, Path] = {}
    if prompts is not None:
        gen.set_prompts(prompts)
    pool = getattr(gen, "prompts", ()) or ()
    if pool:
        paths["prompts"] = atomic_write_text(out / "prompts.txt", "".join(f"#{i}\t{p}\n" for i, p in enumerate(pool)))
    count = info.num_classes or len(pool)
    cond = class_plan(n, count, columns) if count else None
    rows = grid_rows(cond, columns, max_grid_rows) if cond is not None else [
        torch.arange(s, min(s + columns, n)) for s in range(0, min(n, columns * max_grid_rows), columns)]
    wanted = {int(i) for row in rows for i in row}
    kept: dict[int, torch.Tensor] = {}
    chunk = checkpoint_chunk(resolved, ckpt)
    g = torch.Generator().manual_seed(seed)
    size = info.sample_shape[1:]
    with torch.no_grad(), out_of_memory_hint("rdmx sample", "eval.chunk", chunk), \
            NpzStream(out / "samples.npz", n, (*size, 3), cond) as npz:
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            noise = gen.sample_noise(m, g, comp.device)
            images = gen(noise, None if cond is None else cond[s : s + m].to(comp.device)).float().cpu()
            npz.write(to_uint8_nhwc(images))
            kept.update({i: images[i - s] for i in range(s, s + m) if i in wanted})
    paths["npz"] = out / "samples.npz"
    per_grid = 8
    for k in range(0, len(rows), per_grid):
        block = rows[k : k + per_grid]
        images = torch.stack([kept[int(i)] for row in block for i in row])
        labels = None
        if cond is not None:
            labels = [_label(info, int(cond[i])) for row in block for i in row]
        # each row is padded to full width so that row labels line up
        images, labels = _pad_rows(block, images, labels, columns)
        paths[f"grid{k // per_grid}"] = save_grid(images, out / f"grid-{k // per_grid:04d}.png", labels=labels,
                                                  columns=columns, scale=max(1, 64 // images.shape[-1]))
    return paths


def resolved_sample_shape(resolved: ResolvedRecipe) -> tuple[int, ...] | None:
    """The data's sample shape as its registration declares it (nothing built), when it does."""
    from rdmx.plugins import get_plugins

    try:
        entry = get_plugins().get("datasets", resolved.recipe.data.name)
        shape = entry.declared("sample_shape", resolved.config("data"))
    except Exception:  # noqa: BLE001 - unknown before the data is opened: checked after building
        return None
    return tuple(shape) if shape else None


def _label(info, c: int) -> str:
    if not info.num_classes:
        return f"#{c}"  # prompt c (prompts.txt)
    return info.class_names[c] if info.class_names else str(c)


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


def geneval_checkpoint(resolved: ResolvedRecipe, checkpoint: str | Path | None, metadata_path: str | Path, *,
                       out: Path, per_prompt: int = 4, weights: str = "auto") -> Path:
    """The GenEval folder layout (``rdmx.samples.write_geneval``) for a checkpoint (or the base generator)."""
    from rdmx.geneval import write_protocol
    from rdmx.samples import GENEVAL_SEED_BASE, read_geneval_metadata, write_geneval

    metadata = read_geneval_metadata(metadata_path)
    comp, ckpt = load_generator(resolved, checkpoint, weights)
    batch = checkpoint_chunk(resolved, ckpt)
    with out_of_memory_hint("rdmx sample --format geneval", "eval.chunk", batch):
        folder = write_geneval(comp.generator, metadata, out, per_prompt=per_prompt, device=comp.device, batch=batch)
    write_protocol(folder, prompts=len(metadata), per_prompt=per_prompt, seed_base=GENEVAL_SEED_BASE,
                   generator_config=resolved.to_dict()["generator"],
                   checkpoint=str(ckpt.path) if ckpt is not None else "base", weights=comp.weights)
    return folder
