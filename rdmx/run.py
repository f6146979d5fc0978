"""Running recipes: one run, or a sweep (a parent run with one child per cell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rdmx.errors import RecipeError
from rdmx.plugins import get_plugins
from rdmx.recipe import ResolvedRecipe, sweep_cells
from rdmx.track.base import NullTracker, Tracker, make_tracker
from rdmx.train.distributed import from_environment


RUNS = Path("runs")
RESOLVED_RECIPE = "recipe.resolved.toml"


def default_out_dir(resolved: ResolvedRecipe) -> Path:
    """``runs/<name>-<fingerprint>``; the name is validated (no path separators), and the folder is
    checked to stay inside ``runs/`` all the same."""
    out = RUNS / f"{resolved.recipe.name}-{resolved.fingerprint[:8]}"
    if out.resolve().parent != RUNS.resolve():
        raise RecipeError(f"{resolved.source}: name: {resolved.recipe.name!r} would put the run outside runs/")
    return out


def write_resolved_recipe(resolved: ResolvedRecipe, path: Path) -> Path:
    """The resolved recipe as TOML (atomically): ``rdmx run`` on it reproduces the run's fingerprint."""
    from rdmx.tomlwrite import dumps

    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# the resolved recipe of {resolved.source} (fingerprint {resolved.fingerprint}); "
            f"`rdmx run` accepts it as is\n" + dumps(resolved.to_dict()))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def plugin_versions() -> dict[str, str]:
    return {f"{i.distribution}:{i.name}": f"{i.version} ({i.status})" for i in get_plugins().infos}


def _log_common_artifacts(tracker: Tracker, resolved: ResolvedRecipe, out: Path) -> None:
    from rdmx.train.loop import write_json_atomic

    if isinstance(tracker, NullTracker) and not from_environment().main:
        return

    write_resolved_recipe(resolved, out / RESOLVED_RECIPE)
    write_json_atomic(out / "plugins.json", plugin_versions())
    tracker.log_artifact(out / RESOLVED_RECIPE)
    tracker.log_artifact(out / "plugins.json")


def run_one(resolved: ResolvedRecipe, out: Path, tracker: Tracker, progress: bool = True,
            nested: bool = False, resume: bool = True) -> dict[str, Any]:
    from rdmx.train.loop import Trainer

    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(resolved, out, tracker=tracker, progress=progress)
    run_id = None
    ckpt = out / "checkpoints" / "last.pt"
    if resume and ckpt.is_file():
        from rdmx.train.checkpoint import load_checkpoint

        run_id = load_checkpoint(ckpt, resolved.fingerprint).get("run_id")
    name = resolved.recipe.tracking.run_name or f"{resolved.recipe.name}-{resolved.fingerprint[:8]}"
    tracker.start(name, resolved.to_dict(), tags={"rdmx.fingerprint": resolved.fingerprint}, run_id=run_id,
                  nested=nested)
    status = "FAILED"
    try:
        _log_common_artifacts(tracker, resolved, out)
        summary = trainer.run(resume=resume)
        summary["run_id"] = tracker.run_id
        status = "FINISHED"
        return summary
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)


def sweep_figures(resolved: ResolvedRecipe, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """Figures of a finished sweep, made by the recipe's metrics that know how (``sweep_figure``)."""
    plugins = get_plugins()
    made: list[Path] = []
    data_config = resolved.to_dict()["data"]
    for i, block in enumerate(resolved.recipe.eval.metrics):
        metric = plugins.get("metrics", block.name).build(resolved.config(f"eval.metrics[{i}]"))
        if hasattr(metric, "sweep_figure"):
            png, _ = metric.sweep_figure(results, data_config, out)
            made += [png, png.with_name("table.md")]
    return made


def run_recipe(resolved: ResolvedRecipe, out: Path | None = None, progress: bool = True,
               resume: bool = True) -> dict[str, Any]:
    """Run a recipe (or its sweep); writes ``summary.json`` in ``out``."""
    from rdmx.train.loop import write_json_atomic

    out = Path(out) if out else default_out_dir(resolved)
    main = from_environment().main  # under torchrun only rank 0 tracks and writes summaries
    tracker = make_tracker(resolved) if main else NullTracker()
    if not resolved.recipe.sweep:
        summary = run_one(resolved, out, tracker, progress=progress, resume=resume)
        if main:
            write_json_atomic(out / "summary.json", summary)
    else:
        cells = sweep_cells(resolved)
        parent = tracker.start(f"{resolved.recipe.name}-sweep-{resolved.fingerprint[:8]}", {"sweep": json.dumps(resolved.recipe.sweep)},
                               tags={"rdmx.fingerprint": resolved.fingerprint, "rdmx.sweep": "parent"})
        results = []
        status = "FAILED"
        try:
            _log_common_artifacts(tracker, resolved, out)
            for i, (values, cell) in enumerate(cells):
                cell_out = out / f"cell-{i:03d}"
                s = run_one(cell, cell_out, tracker, progress=progress, nested=True, resume=resume)
                results.append({"cell": i, "values": values, "out": str(cell_out), **s})
            for path in sweep_figures(resolved, results, out) if main else []:
                tracker.log_artifact(path)
            status = "FINISHED"
        finally:
            summary = {"recipe": resolved.recipe.name, "fingerprint": resolved.fingerprint, "run_id": parent,
                       "sweep": resolved.recipe.sweep, "cells": results}
            if main:
                write_json_atomic(out / "summary.json", summary)  # also what finished of a failed sweep
            tracker.end(status)
    return summary
