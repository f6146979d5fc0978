"""``rdmx export``: a trained generator leaves rdmx.

The core writes, for any generator, the ``safetensors`` format in the layout the Hugging Face Hub
expects (nothing is uploaded):

* ``model.safetensors``: the generator's state dict (the EMA or the raw weights), with its sha256;
* ``config.json``: the generator plugin and its config, the resolved recipe and its fingerprint,
  the step, the weights chosen, rdmx's version (the same as ``rdmx_export.json``);
* ``README.md``: a model card (what it is, how it was trained, the encoders, the run's figures,
  how to load it).

A generator plugin adds its own formats through its registration (metadata ``exports``:
format -> ``"module:function"``, called as ``function(generator, config, folder, export)``), e.g.
the release's ``.pth`` layout for pMF-H or a diffusers pipeline for FLUX.2 [klein]; every format
also gets ``rdmx_export.json`` and the model card. An export is written into a temporary folder
and moved into place, so an existing folder is never touched and a failed export leaves nothing.

A recipe's ``generator.weights`` may point at a ``safetensors`` export folder: the generator is
built from the recipe and the export's weights loaded into it exactly (:func:`load_export`).
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdmx import __version__
from rdmx.errors import RdmxError

CORE_FORMATS = ("safetensors",)
EXPORT_FILE = "rdmx_export.json"


@dataclass
class Export:
    """What an exporter knows of the export it writes."""

    resolved: Any  # the ResolvedRecipe
    checkpoint: Any  # rdmx.train.checkpoint.Checkpoint
    weights: str  # "ema" or "raw"
    fmt: str
    info: dict[str, Any] = field(default_factory=dict)  # provenance (config.json / rdmx_export.json)


def run_folder(path: Path) -> Path:
    """The run folder of a checkpoint: ``RUN/checkpoints/step-N`` or ``RUN/posthoc/NAME`` -> ``RUN``."""
    path = Path(path)
    if path.is_file():
        return path.parent.parent
    return path.parent.parent if path.parent.name in ("checkpoints", "posthoc") else path


def formats(entry) -> dict[str, str]:
    """Export formats of a registered generator: the core's and its plugin's."""
    extra = dict(entry.meta_value("exports") or {})
    return {**{f: "core" for f in CORE_FORMATS}, **extra}


def _target(out: Path) -> None:
    if out.is_symlink():
        raise RdmxError(f"--out {out} is a symbolic link; give a folder path of its own")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RdmxError(f"--out {out} exists and is not empty; give a new folder (nothing was written)")


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path, *, weights: str = "auto",
                      recipe: str | Path | None = None, eval_json: str | Path | None = None) -> list[Path]:
    """Export a checkpoint's generator as ``fmt`` into ``out`` (see the module docstring)."""
    from rdmx.checkpoints import without_warm_start
    from rdmx.plugins import get_plugins
    from rdmx.recipe import load_recipe
    from rdmx.train.build import build_generator
    from rdmx.train.checkpoint import locate, open_checkpoint

    import torch

    out = Path(out)
    _target(out)
    path = locate(checkpoint)
    run = run_folder(path)
    if recipe is None:
        recipe = run / "recipe.resolved.toml"
        if not recipe.is_file():
            raise RdmxError(f"{path}: no recipe.resolved.toml in its run folder {run}; give the recipe that made it "
                            f"(--recipe)")
    resolved = load_recipe(recipe)
    entry = get_plugins().get("generators", resolved.recipe.generator.name, where=f"{recipe}: generator.name")
    known = formats(entry)
    if fmt not in known:
        raise RdmxError(f"--format {fmt!r}: generator '{entry.name}' exports {', '.join(known)}")
    ckpt = open_checkpoint(path, resolved.fingerprint)
    generator = build_generator(without_warm_start(resolved), torch.device("cpu"))
    choice = ckpt.load_generator(generator, weights)
    generator.eval()
    export = Export(resolved, ckpt, choice, fmt)
    export.info = provenance(export, entry)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        if fmt == "safetensors":
            write_safetensors(generator, tmp, export)
        else:
            module, _, name = known[fmt].partition(":")
            getattr(importlib.import_module(module), name)(generator, resolved.config("generator"), tmp, export)
        (tmp / EXPORT_FILE).write_text(json.dumps(export.info, indent=2, sort_keys=True, default=str))
        (tmp / "README.md").write_text(model_card(export, run, eval_json))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(p for p in out.rglob("*") if p.is_file())


def provenance(export: Export, entry) -> dict[str, Any]:
    r = export.resolved
    return {
        "rdmx_export": 1, "rdmx_version": __version__, "format": export.fmt,
        "generator": {"name": r.recipe.generator.name, "plugin": entry.plugin, "version": entry.version,
                      "config": r.config("generator").model_dump(mode="json")},
        "recipe": r.to_dict(), "fingerprint": r.fingerprint, "step": export.checkpoint.step,
        "weights": export.weights, "checkpoint": str(export.checkpoint.path),
        "posthoc_ema": (export.checkpoint.small.get("ema") or {}).get("posthoc"),
    }


def write_safetensors(generator, folder: Path, export: Export) -> None:
    from rdmx.files import save_tensors

    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    save_tensors(folder / "model.safetensors", state, {"format": "pt", "rdmx_fingerprint": export.resolved.fingerprint,
                                                       "rdmx_weights": export.weights})
    (folder / "config.json").write_text(json.dumps(export.info, indent=2, sort_keys=True, default=str))


def load_export(folder: str | Path, generator) -> None:
    """Load a ``safetensors`` export's weights into ``generator`` (built from the same recipe's
    generator block), strictly: a different architecture is one message listing the keys."""
    from rdmx.files import load_tensors
    from rdmx.train.checkpoint import mismatch

    folder = Path(folder)
    state, _ = load_tensors(folder / "model.safetensors", what="an rdmx export",
                            remedy="export the checkpoint again (rdmx export)")
    mismatch({k: tuple(v.shape) for k, v in state.items()},
             {k: tuple(v.shape) for k, v in generator.state_dict().items()}, folder, "generator")
    generator.load_state_dict(state)


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / EXPORT_FILE).is_file() and (path / "model.safetensors").is_file()


def _figures(run: Path, eval_json: str | Path | None) -> tuple[str, dict[str, float]]:
    """(where, metrics) for the card: an eval.json given, else the run's summary.json final metrics."""
    candidates = [Path(eval_json)] if eval_json else [run / "eval" / "eval.json", run / "eval.json"]
    for path in candidates:
        if path.is_file():
            data = json.loads(path.read_text())
            return str(path), {k: v for k, v in (data.get("summary") or {}).items() if isinstance(v, (int, float))}
    summary = run / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        return str(summary), {k.removeprefix("eval/"): v for k, v in (data.get("final") or {}).items()
                              if k.count("/") == 1 and isinstance(v, (int, float))}
    return "", {}


def model_card(export: Export, run: Path, eval_json: str | Path | None) -> str:
    r = export.resolved.recipe
    t = r.train
    trained = [e for e in r.battery.encoders if getattr(e, "role", "train") != "heldout"]
    heldout = [e for e in r.battery.encoders if getattr(e, "role", "train") == "heldout"]
    where, metrics = _figures(run, eval_json)
    tags = ["rdmx", "one-step-generator", "representation-distribution-matching", r.generator.name]
    pipeline = "text-to-image" if r.joint.kind == "text" else "unconditional-image-generation"
    lines = ["---", "library_name: rdmx", f"pipeline_tag: {pipeline}", "tags:"] + [f"- {x}" for x in tags] + ["---", ""]
    lines += [f"# {r.name}: a one-step `{r.generator.name}` generator trained with rdmx", "",
              "A one-step image generator trained by Representation Distribution Matching (iRDM, arXiv "
              "2607.02375): its generated batch is matched to the real data's feature distribution in the space of "
              "every encoder of a frozen battery.", "",
              "## Training", "",
              f"- recipe `{r.name}`, fingerprint `{export.resolved.fingerprint}`, {export.checkpoint.step} of "
              f"{t.steps} steps, generated batch N = {t.batch}, lr {t.lr} ({t.lr_schedule})",
              f"- comparison: `{r.estimator.name}`; balancer: `{r.balancer.name}`; joint law: {r.joint.kind}",
              f"- training encoders ({len(trained)}): " + ", ".join(f"`{e.label or e.name}` ({e.name})" for e in trained),
              f"- held-out encoders ({len(heldout)}): " + (", ".join(f"`{e.label or e.name}` ({e.name})" for e in heldout)
                                                          or "none"),
              f"- weights in this export: **{export.weights}**" + (" (EMA of the generator)" if export.weights == "ema"
                                                                    else ""), ""]
    if metrics:
        lines += ["## Evaluation", "", f"From `{Path(where).name}` of the run (real data scores 1.00 on SW_r and MMDr):",
                  "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
        lines.append("")
    lines += ["## How to load it", "", "```python"]
    if export.fmt == "safetensors":
        lines += ["# with rdmx: the recipe in config.json, its generator.weights pointing at this folder",
                  "#   rdmx sample config-recipe.toml --set generator.weights=\"/path/to/this/folder\" ...",
                  "# or plainly:", "from safetensors.torch import load_file",
                  "state = load_file(\"model.safetensors\")  # the generator's state dict"]
    else:
        lines += [f"# format {export.fmt}: see rdmx_export.json and the generator plugin's README"]
    lines += ["```", "", f"Exported by rdmx {__version__} (`rdmx export --format {export.fmt}`).", ""]
    return "\n".join(lines)
