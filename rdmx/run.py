"""Running recipes: one run, or a sweep (a parent run with one child per cell)."""

from __future__ import annotations

import contextlib
import json
import sys
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
            f"`rdmx run` accepts it as is\n" + dumps(escape_interpolation(resolved.to_dict())))
    return atomic_write_text(path, text)


def escape_interpolation(obj: Any) -> Any:
    """Every literal ``${`` of a resolved value written as ``$${`` (read back as ``${``, never
    interpolated again: the rerun is the same recipe, whatever the environment holds)."""
    if isinstance(obj, str):
        from rdmx.recipe_compose import _ENV

        return _ENV.sub(lambda m: "$" + m.group(0), obj)
    if isinstance(obj, dict):
        return {k: escape_interpolation(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [escape_interpolation(v) for v in obj]
    return obj


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


def finished_summary(resolved: ResolvedRecipe, out: Path, checkpoint) -> dict[str, Any] | None:
    """The summary of a run that already reached ``train.steps`` in ``out``, else None
    (``checkpoint``: the folder's newest, a :class:`rdmx.train.checkpoint.Checkpoint`)."""
    from rdmx.files import IntegrityError, read_json

    path = out / "summary.json"
    if checkpoint is None or not path.is_file():
        return None
    try:
        summary = read_json(path)
    except IntegrityError:
        return None  # the run is finished but its summary damaged: it is written again
    if not isinstance(summary, dict) or summary.get("fingerprint") != resolved.fingerprint:
        return None
    t = resolved.recipe.train
    if checkpoint.step == t.steps and summary.get("steps") == checkpoint.step:
        return summary
    # ended by its wall-clock budget at this checkpoint, and the budget asked for now is no larger
    budget = summary.get("stopped_by_budget") and summary.get("steps_done") == checkpoint.step
    return summary if budget and t.max_seconds and t.max_seconds <= summary.get("max_seconds", 0) else None


def _previous_run_id(out: Path) -> str | None:
    from rdmx.files import IntegrityError, read_json

    try:
        found = read_json(out / RUN_FILE) if (out / RUN_FILE).is_file() else {}
    except IntegrityError:
        return None  # only a hint for marking an abandoned tracking run
    return found.get("run_id") if isinstance(found, dict) else None


def _start_over(out: Path) -> list[str]:
    """``--fresh``: the folder's checkpoints and summary of the run trained before go (rdmx wrote
    them; another --out keeps both runs). Returns what went, for the message."""
    import shutil

    from rdmx.train.checkpoint import LEGACY_FILE, scan

    gone = []
    root = out / "checkpoints"
    for _, folder, _ in scan(root):
        shutil.rmtree(folder)
        gone.append(folder.name)
    for path in (root / LEGACY_FILE, out / "summary.json"):
        if path.is_file():
            path.unlink()
            gone.append(path.name)
    return gone


def locate_resume_point(resolved: ResolvedRecipe, out: Path, resume: bool):
    """The checkpoint a run in ``out`` resumes from (newest sealed; its files are verified by the
    trainer, split across ranks), or None. Rank 0 first removes saves that were cut short."""
    from rdmx.console import warn
    from rdmx.train.checkpoint import clean_partial, latest, open_checkpoint

    root = out / "checkpoints"
    if root.exists() and (not root.is_dir() or root.is_symlink()):  # found now, not when the first save fails
        raise RdmxError(f"{root} is not a folder, so this run could not checkpoint; move it away")
    main = from_environment().main
    if main and root.is_dir():
        gone = clean_partial(root)
        if gone:
            warn(f"removed {len(gone)} checkpoint folder(s) a kill cut short before they were sealed: "
                 f"{', '.join(p.name for p in gone)}")
    if not resume:
        return None
    found = latest(root)
    return open_checkpoint(found, resolved.fingerprint, verify=False, recipe=resolved.to_dict()) if found else None


def run_one(resolved: ResolvedRecipe, out: Path, tracker: Tracker, progress: bool = True,
            nested: bool = False, resume: bool = True, parent_run_id: str | None = None) -> dict[str, Any]:
    """Train one recipe in ``out`` (locked while it runs) and write ``out/summary.json``.

    A run that already finished prints its summary and changes nothing (``resume=False``,
    i.e. ``--fresh``, trains again); a killed or stopped run resumes from its newest sealed
    checkpoint and continues the same tracking run; a tracking run that a killed process left
    open is marked failed. ``out/run.log`` tells the run's story (rdmx.runlog). ``parent_run_id``:
    the tracking run of the sweep this run is a cell of, when that sweep runs in another process."""
    from rdmx.console import warn
    from rdmx.files import FolderLock, clean_stale_temps, write_json
    from rdmx.runlog import RunLog
    from rdmx.train.loop import Trainer
    from rdmx.train.stop import RunStopped

    dist = from_environment()
    main = dist.main
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, enabled=main), contextlib.ExitStack() as stack:
        if main:
            clean_stale_temps(out, recursive=True)
        if not resume and main:
            gone = _start_over(out)
            if gone:
                warn(f"--fresh: removed the earlier run's {', '.join(gone)} from {out}")
        if dist.world > 1:  # the other ranks look for checkpoints after rank 0's clean-up
            import torch.distributed as tdist

            tdist.barrier()
        ckpt = locate_resume_point(resolved, out, resume)
        steps = resolved.recipe.train.steps
        if ckpt is not None and ckpt.step > steps:
            raise RdmxError(f"{ckpt.path}: this run is at step {ckpt.step}, beyond train.steps = {steps}; "
                            f"ask for at least {ckpt.step} steps, or train again with --fresh (another --out "
                            f"keeps both)")
        done = finished_summary(resolved, out, ckpt)
        if done is not None and not done.get("trained", True):
            raise RdmxError(f"{out} holds this recipe's finished run, which did not train (it skipped "
                            f"{done.get('skipped_steps')} of {done['steps']} steps; see its run.log); --fresh trains "
                            f"it again")
        if done is not None:  # nothing changes in the folder, its log included
            if main:
                more = (" --set train.steps=<more> trains on from it," if resolved.recipe.train.lr_schedule == "constant"
                        else "")
                warn(f"{out} holds this recipe's finished run ({done['steps']} steps): nothing to do;{more} "
                     f"--fresh trains it again, another --out keeps both")
            return done
        log = stack.enter_context(RunLog(out, rank=dist.rank))
        log.started(resumed_from=ckpt.step if ckpt is not None else None)
        from rdmx import threads

        threads.announce()
        previous = _previous_run_id(out)
        run_id = ckpt.run_id if ckpt is not None else None
        if main and previous and previous != run_id:
            tracker.mark_abandoned(previous)
        trainer = Trainer(resolved, out, tracker=tracker, progress=progress)
        if hasattr(tracker, "use_folder") and main:
            tracker.use_folder(out, resume_step=ckpt.step if ckpt is not None else None)
        name = resolved.recipe.tracking.run_name or f"{resolved.recipe.name}-{resolved.fingerprint[:8]}"
        tags = {"rdmx.fingerprint": resolved.fingerprint}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id  # shown nested under the sweep
        tracker.start(name, resolved.to_dict(), tags=tags, run_id=run_id, nested=nested)

        def record(state: str, **more) -> None:
            if main:
                write_json(out / RUN_FILE, {"run_id": tracker.run_id, "state": state, **more})

        record("running")
        status = "FAILED"
        try:
            _log_common_artifacts(tracker, resolved, out)
            summary = trainer.run(resume=resume, checkpoint=ckpt)
            summary["run_id"] = tracker.run_id
            if main:
                write_json(out / "summary.json", summary)
                tracker.log_summary(summary)
            if not summary.get("trained", True):  # every number of it is the step-0 generator's
                raise RdmxError(f"{out}: {trainer.untrained_message()}")
            status = "FINISHED"
            record("finished", step=steps)
            return summary
        except RunStopped as stop:
            status = "KILLED"  # MLflow's word for a run interrupted on request
            record("stopped", step=stop.step, signal=stop.signal_name,
                   checkpoint=str(stop.checkpoint) if stop.checkpoint else None)
            raise
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException as exc:
            log.exception(exc)
            record("failed", error=f"{type(exc).__name__}: {exc}"[:500])
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
    from rdmx.train.checkpoint import latest, open_checkpoint

    try:
        summary = read_json(out / "summary.json") if (out / "summary.json").is_file() else None
    except IntegrityError:
        return None
    if not summary or summary.get("fingerprint") != resolved.fingerprint or len(summary.get("cells", [])) != len(cells):
        return None
    for i, (_, cell) in enumerate(cells):
        cell_out = out / f"cell-{i:03d}"
        found = latest(cell_out / "checkpoints")
        if found is None or finished_summary(cell, cell_out, open_checkpoint(found, cell.fingerprint, verify=False)) is None:
            return None
    if from_environment().main:
        warn(f"{out} holds this sweep, finished ({len(cells)} cells): nothing to do; --fresh trains it again")
    return summary


def run_recipe(resolved: ResolvedRecipe, out: Path | None = None, progress: bool = True,
               resume: bool = True, submit=None) -> dict[str, Any]:
    """Run a recipe (or its sweep); writes ``summary.json`` in ``out``. ``submit``: a
    :class:`rdmx.launch.Submission` that runs the run or the cells as scheduler jobs instead."""
    from rdmx.files import write_json
    from rdmx.track.safe import SafeTracker
    from rdmx.train.stop import RunStopped

    out = Path(out) if out else default_out_dir(resolved)
    main = from_environment().main  # under torchrun only rank 0 tracks and writes summaries
    tracker = SafeTracker(make_tracker(resolved) if main else NullTracker())
    if submit is not None and not resume:
        raise RdmxError("--fresh with --submit: start the runs over by removing their folders, or use another --out")
    if not resolved.recipe.sweep:
        if submit is not None:
            done = submit.run([("run", resolved, out)], None, out)
            return done[0] if done else {"submitted": str(out / "jobs.json")}
        summary = run_one(resolved, out, tracker, progress=progress, resume=resume)
    else:
        cells = sweep_cells(resolved)
        done = finished_sweep(resolved, out, cells) if resume else None
        if done is not None:
            return done
        if main:
            tracker.attach_folder(out)  # the sweep's own run (figures) lives in the sweep's folder
        parent = tracker.start(f"{resolved.recipe.name}-sweep-{resolved.fingerprint[:8]}", {"sweep": json.dumps(resolved.recipe.sweep)},
                               tags={"rdmx.fingerprint": resolved.fingerprint, "rdmx.sweep": "parent"})
        results = []
        status = "FAILED"
        try:
            _log_common_artifacts(tracker, resolved, out)
            if submit is not None:  # the cells as jobs (a SLURM job array, or local processes in parallel)
                runs = [(f"cell-{i:03d}", cell, out / f"cell-{i:03d}") for i, (_, cell) in enumerate(cells)]
                done = submit.run(runs, parent, out)
                if done is None:
                    status = "RUNNING"
                    return {"submitted": str(out / "jobs.json"), "cells": len(cells)}
                results = [{"cell": i, "values": values, "out": str(out / f"cell-{i:03d}"), **s}
                           for i, ((values, _), s) in enumerate(zip(cells, done))]
            else:
                for i, (values, cell) in enumerate(cells):
                    cell_out = out / f"cell-{i:03d}"
                    s = run_one(cell, cell_out, tracker, progress=progress, nested=True, resume=resume)
                    results.append({"cell": i, "values": values, "out": str(cell_out), **s})
            for path in sweep_figures(resolved, results, out) if main else []:
                tracker.log_artifact(path)
            status = "FINISHED"
        except RunStopped:
            status = "KILLED"
            raise
        finally:
            summary = {"recipe": resolved.recipe.name, "fingerprint": resolved.fingerprint, "run_id": parent,
                       "sweep": resolved.recipe.sweep, "cells": results}
            if main and status != "RUNNING":
                write_json(out / "summary.json", summary)  # also what finished of a failed sweep
            if status != "RUNNING":  # submitted, not waited for: the sweep's run stays open
                tracker.end(status)
    return summary
