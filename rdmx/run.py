"""Running recipes: one run, or a sweep (a parent run with one child per cell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError, RecipeError
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

    from rdmx.files import atomic_write_text

    text = (f"# the resolved recipe of {resolved.source} (fingerprint {resolved.fingerprint}); "
            f"`rdmx run` accepts it as is\n" + dumps(resolved.to_dict()))
    return atomic_write_text(path, text)


def plugin_versions() -> dict[str, str]:
    return {f"{i.distribution}:{i.name}": f"{i.version} ({i.status})" for i in get_plugins().infos}


def _log_common_artifacts(tracker: Tracker, resolved: ResolvedRecipe, out: Path) -> None:
    from rdmx.files import write_json

    if isinstance(tracker, NullTracker) and not from_environment().main:
        return

    write_resolved_recipe(resolved, out / RESOLVED_RECIPE)
    write_json(out / "plugins.json", plugin_versions())
    tracker.log_artifact(out / RESOLVED_RECIPE)
    tracker.log_artifact(out / "plugins.json")


RUN_FILE = "run.json"  # the tracking run that last used this folder (found abandoned after a kill)


def finished_summary(resolved: ResolvedRecipe, out: Path, checkpoint: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary of a run that already reached ``train.steps`` in ``out``, else None."""
    from rdmx.files import IntegrityError, read_json

    path = out / "summary.json"
    if checkpoint is None or checkpoint["step"] != resolved.recipe.train.steps or not path.is_file():
        return None
    try:
        summary = read_json(path)
    except IntegrityError:
        return None  # the run is finished but its summary damaged: it is written again
    ok = isinstance(summary, dict) and summary.get("fingerprint") == resolved.fingerprint
    return summary if ok and summary.get("steps") == checkpoint["step"] else None


def _previous_run_id(out: Path) -> str | None:
    from rdmx.files import IntegrityError, read_json

    try:
        found = read_json(out / RUN_FILE) if (out / RUN_FILE).is_file() else {}
    except IntegrityError:
        return None  # only a hint for marking an abandoned tracking run
    return found.get("run_id") if isinstance(found, dict) else None


def run_one(resolved: ResolvedRecipe, out: Path, tracker: Tracker, progress: bool = True,
            nested: bool = False, resume: bool = True) -> dict[str, Any]:
    """Train one recipe in ``out`` (locked while it runs) and write ``out/summary.json``.

    A run that already finished prints its summary and changes nothing (``resume=False``,
    i.e. ``--fresh``, trains again); a killed run resumes from its last checkpoint; a tracking run
    that a killed process left open is marked failed."""
    from rdmx.console import warn
    from rdmx.files import FolderLock, clean_stale_temps, write_json
    from rdmx.train.checkpoint import load_checkpoint
    from rdmx.train.loop import Trainer

    main = from_environment().main
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, enabled=main):
        if main:
            clean_stale_temps(out, recursive=True)
        ckpt_path = out / "checkpoints" / "last.pt"
        if ckpt_path.exists() and not ckpt_path.is_file():  # found now, not when the first save fails
            raise RdmxError(f"{ckpt_path} is not a file, so this run could not checkpoint; move it away")
        ckpt = load_checkpoint(ckpt_path, resolved.fingerprint) if resume and ckpt_path.exists() else None
        steps = resolved.recipe.train.steps
        if ckpt is not None and ckpt["step"] > steps:
            raise RdmxError(f"{ckpt_path}: this run is at step {ckpt['step']}, beyond train.steps = {steps}; "
                            f"ask for at least {ckpt['step']} steps, or train again with --fresh (another --out "
                            f"keeps both)")
        done = finished_summary(resolved, out, ckpt)
        if done is not None:
            if main:
                more = (" --set train.steps=<more> trains on from it," if resolved.recipe.train.lr_schedule == "constant"
                        else "")
                warn(f"{out} holds this recipe's finished run ({done['steps']} steps): nothing to do;{more} "
                     f"--fresh trains it again, another --out keeps both")
            return done
        previous = _previous_run_id(out)
        run_id = ckpt.get("run_id") if ckpt is not None else None
        if main and previous and previous != run_id:
            tracker.mark_abandoned(previous)
        trainer = Trainer(resolved, out, tracker=tracker, progress=progress)
        if hasattr(tracker, "use_folder") and main:
            tracker.use_folder(out, resume_step=ckpt["step"] if ckpt is not None else None)
        name = resolved.recipe.tracking.run_name or f"{resolved.recipe.name}-{resolved.fingerprint[:8]}"
        tracker.start(name, resolved.to_dict(), tags={"rdmx.fingerprint": resolved.fingerprint}, run_id=run_id,
                      nested=nested)
        if main and tracker.run_id:
            write_json(out / RUN_FILE, {"run_id": tracker.run_id})
        status = "FAILED"
        try:
            _log_common_artifacts(tracker, resolved, out)
            summary = trainer.run(resume=resume, checkpoint=ckpt)
            summary["run_id"] = tracker.run_id
            if main:
                write_json(out / "summary.json", summary)
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


def finished_sweep(resolved: ResolvedRecipe, out: Path, cells) -> dict[str, Any] | None:
    """The summary of a sweep whose every cell already finished in ``out``, else None."""
    from rdmx.console import warn
    from rdmx.files import IntegrityError, read_json
    from rdmx.train.checkpoint import load_checkpoint

    try:
        summary = read_json(out / "summary.json") if (out / "summary.json").is_file() else None
    except IntegrityError:
        return None
    if not summary or summary.get("fingerprint") != resolved.fingerprint or len(summary.get("cells", [])) != len(cells):
        return None
    for i, (_, cell) in enumerate(cells):
        ckpt = out / f"cell-{i:03d}" / "checkpoints" / "last.pt"
        if not ckpt.is_file() or finished_summary(cell, ckpt.parent.parent, load_checkpoint(ckpt, cell.fingerprint)) is None:
            return None
    if from_environment().main:
        warn(f"{out} holds this sweep, finished ({len(cells)} cells): nothing to do; --fresh trains it again")
    return summary


def run_recipe(resolved: ResolvedRecipe, out: Path | None = None, progress: bool = True,
               resume: bool = True) -> dict[str, Any]:
    """Run a recipe (or its sweep); writes ``summary.json`` in ``out``."""
    from rdmx.files import write_json
    from rdmx.track.safe import SafeTracker

    out = Path(out) if out else default_out_dir(resolved)
    main = from_environment().main  # under torchrun only rank 0 tracks and writes summaries
    tracker = SafeTracker(make_tracker(resolved) if main else NullTracker())
    if not resolved.recipe.sweep:
        summary = run_one(resolved, out, tracker, progress=progress, resume=resume)
    else:
        cells = sweep_cells(resolved)
        done = finished_sweep(resolved, out, cells) if resume else None
        if done is not None:
            return done
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
                write_json(out / "summary.json", summary)  # also what finished of a failed sweep
            tracker.end(status)
    return summary
