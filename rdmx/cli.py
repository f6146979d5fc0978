"""The ``rdmx`` command line. Heavy backends (torch, mlflow) are imported only inside commands."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rdmx.errors import RdmxError
from rdmx.hookspecs import KINDS

app = typer.Typer(
    name="rdmx", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Representation Distribution Matching: train one-step generators against a battery of frozen encoders.",
)
_STATE = {"debug": False}

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a field: path=value (repeatable)")]


def _print_version(value: bool) -> None:
    if value:
        from rdmx import __version__

        typer.echo(f"rdmx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    trust_code: Annotated[bool, typer.Option(
        "--trust-code", help="allow the recipe's settings that run code (allow_pickle, trust_remote_code)")] = False,
    threads: Annotated[Optional[str], typer.Option(
        "--threads", help="CPU threads per process (default: the CPUs this process may use / the processes sharing "
                          "them; OMP_NUM_THREADS and RDMX_THREADS are read too)")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print rdmx's version and exit")] = False,
) -> None:
    _STATE["debug"] = debug or os.environ.get("RDMX_DEBUG", "") not in ("", "0")


def _console(stderr: bool = False):
    from rdmx.console import console

    return console(stderr)


# -- inspection ---------------------------------------------------------------------------

@app.command("list")
def list_cmd(
    kind: Annotated[Optional[str], typer.Argument(help=f"one of: {', '.join(KINDS)} (none: a count of each)")] = None,
    pattern: Annotated[str, typer.Argument(help="glob filter on names, e.g. 'toy-*'")] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    options: Annotated[bool, typer.Option("--options", help="every config option of each component: type, "
                                          "default, description")] = False,
) -> None:
    """List registered components of one kind (``--options``: what each one's recipe block takes)."""
    from rdmx.errors import close_matches
    from rdmx.plugins import get_plugins

    if kind is None:
        plugins = get_plugins()
        counts = {k: len(plugins.registry(k)) for k in KINDS}
        problems = plugins.failures() + plugins.warnings()
        if as_json:
            typer.echo(json.dumps({**counts, "failed_plugins": [_problem(i) for i in plugins.failures()],
                                   "plugin_warnings": [_problem(i) for i in plugins.warnings()]}))
            return
        for k, v in counts.items():
            typer.echo(f"{k:<11} {v:>3}   rdmx list {k}")
        for info in problems:
            word = "failed (registers nothing)" if info.status == "failed" else "warning"
            typer.echo(f"plugin {info.summary().replace(': ', f' {word}: ', 1)}", err=info.status == "failed")
        _slow_plugins(plugins)
        if problems:
            typer.echo("(`rdmx plugins` lists every plugin; `RDMX_STRICT_PLUGINS=1 rdmx --debug list` shows the "
                       "traceback of the first failure)", err=bool(plugins.failures()))
        return
    if kind not in KINDS:
        raise RdmxError(f"unknown kind '{kind}'{close_matches(kind, KINDS)}; kinds: {', '.join(KINDS)}")
    plugins = get_plugins()
    entries = [e for e in plugins.registry(kind).entries() if fnmatch.fnmatch(e.name, pattern)]
    from rdmx.meta import META_MODELS

    extra = list(META_MODELS[kind].COLUMNS)  # the columns the kind's metadata model names
    rows = []
    for e in entries:
        row = {"name": e.name, "plugin": e.plugin, "version": e.version, "description": e.description}
        for col in extra:
            row[col] = e.meta_value(col)
        rows.append(row)
    failed = [_problem(i) for i in plugins.failures()]
    if options:
        for row, e in zip(rows, entries):
            row["options"] = config_options(e.config)
    if as_json:
        typer.echo(json.dumps({"kind": kind, "components": rows, "failed_plugins": failed}, indent=2, default=str))
        return
    if options:
        from rich.table import Table

        con = _console()
        for row in rows:
            table = Table(title=f"{kind[:-1]} '{row['name']}' ({row['plugin']}): recipe options")
            for col in ("option", "type", "default", "description"):
                table.add_column(col, overflow="fold")
            for opt in row["options"]:
                table.add_row(opt["name"], opt["type"], opt["default"], opt["description"])
            con.print(table if row["options"] else f"{kind[:-1]} '{row['name']}' ({row['plugin']}): no options")
        return
    from rich.table import Table

    table = Table(title=f"rdmx {kind}" + (f" matching '{pattern}'" if pattern != "*" else ""))
    for col in ["name", "plugin", "version", *extra]:
        table.add_column(col.replace("_", " "), no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(*[_fmt(row[c]) for c in ["name", "plugin", "version", *extra, "description"]])
    con = _console()
    con.print(table)
    for f in failed:
        con.print(f"[red]plugin '{f['plugin']}' ({f['distribution']}) failed[/red]: {f['error']}", markup=True)


def _slow_plugins(plugins) -> None:
    """Name every plugin whose loading took over a second: it slows every rdmx command."""
    for info in plugins.slow():
        typer.echo(f"warning: plugin '{info.name}' ({info.distribution}) took {info.load_s:.1f} s to load; a heavy "
                   f"import at the top of its module (torch backends, models) slows every rdmx command: import it "
                   f"inside the factory", err=True)


def config_options(model) -> list[dict[str, str]]:
    """A config model's fields: name, type, default and description, as the recipe writes them."""
    import typing

    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        kind = getattr(ann, "__name__", None) if not typing.get_args(ann) else None
        kind = kind or str(ann).replace("typing.", "")
        if field.is_required():
            default = "(required)"
        else:
            value = field.get_default(call_default_factory=True)
            default = json.dumps(value, default=str) if not isinstance(value, str) else json.dumps(value)
        out.append({"name": name, "type": kind, "default": default, "description": field.description or ""})
    return out


def _problem(info) -> dict:
    return {"plugin": info.name, "distribution": info.distribution, "version": info.version, "error": info.error}


def _fmt(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, int) and value >= 10**6:  # parameter counts
        return f"{value / 1e6:,.1f} M"
    return "" if value is None else str(value)


@app.command("plugins")
def plugins_cmd(
    requirements: Annotated[bool, typer.Option("--requirements", help="print pip pins of installed plugins")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List every plugin: distribution, version, hooks, status."""
    from rdmx.plugins import get_plugins

    infos = get_plugins().infos
    if requirements:
        pins = sorted({f"{i.distribution}=={i.version}" for i in infos if i.distribution not in ("?",)})
        typer.echo("\n".join(pins))
        return
    if as_json:
        typer.echo(json.dumps([{
            "name": i.name, "distribution": i.distribution, "version": i.version, "module": i.module,
            "hooks": i.hooks, "status": i.status, "error": i.error, "components": i.components,
            "load_s": round(i.load_s, 4),
        } for i in infos], indent=2))
        return
    from rich.table import Table

    table = Table(title="rdmx plugins")
    for col in ("plugin", "distribution", "version", "hooks", "load s", "status"):
        table.add_column(col, overflow="fold")
    for i in infos:
        color = {"ok": "green", "warning": "yellow"}.get(i.status, "red")
        status = f"[{color}]{i.status}[/{color}]" + (f": {i.error}" if i.error else "")
        hooks = ", ".join(h.removeprefix("rdmx_register_") for h in i.hooks)
        table.add_row(i.name, i.distribution, i.version, hooks, f"{i.load_s:.2f}", status)
    _console().print(table)
    _slow_plugins(get_plugins())


@app.command("show")
def show_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the resolved, validated recipe and its fingerprint."""
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    if resolved.recipe.sweep:  # every cell validated, as `rdmx run` will before any work
        from rdmx.recipe import sweep_cells

        sweep_cells(resolved)
    if as_json:
        typer.echo(json.dumps({"fingerprint": resolved.fingerprint, "recipe": resolved.to_dict()}, indent=2))
        return
    from rdmx.tomlwrite import dumps
    from rdmx.trust import code_settings

    typer.echo(f"# fingerprint: {resolved.fingerprint}")
    for path, cfg in resolved.configs.items():  # settings that run code: flagged, they need --trust-code
        for name in code_settings(cfg):
            typer.echo(f"# WARNING: {path}.{name} = true runs code (a full unpickle / a repository's Python); "
                       f"it takes effect only with rdmx --trust-code")
    typer.echo(dumps(resolved.to_dict()))


# -- running -----------------------------------------------------------------------------

@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML")],
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (summary.json, grids, checkpoints)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="build every component, run 2 generated samples through every encoder, then stop")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="train again: the checkpoints and summary of a run "
                                        "already in --out are removed")] = False,
    submit: Annotated[Optional[str], typer.Option(
        "--submit", help="run as scheduler jobs through submitit: 'slurm' (a sweep is one job array) or 'local' "
                         "(jobs on this machine, e.g. sweep cells in parallel)")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="with --submit: jobs running at once")] = 1,
    slurm: Annotated[Optional[list[str]], typer.Option(
        "--slurm", help="with --submit slurm: a submitit / SLURM parameter key=value, e.g. partition=gpu, "
                        "gpus_per_node=8, tasks_per_node=8, nodes=2, timeout_min=2880 (repeatable)")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="with --submit: wait for the jobs and print the "
                                       "summary (--no-wait: submit and return)")] = True,
) -> None:
    """Train a generator as the recipe says."""
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    con = _console()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        con.print(f"[bold]{resolved.recipe.name}[/bold]  fingerprint {resolved.fingerprint}")
    if dry_run:
        from rdmx.train.build import build_components, probe_components

        cells = [resolved]
        if resolved.recipe.sweep:
            from rdmx.recipe import sweep_cells

            cells = [c for _, c in sweep_cells(resolved)]
        for cell in cells:
            comp = build_components(cell)
            n_gen = sum(p.numel() for p in comp.generator.parameters())
            con.print(f"generator {cell.recipe.generator.name}: {n_gen:,} parameters on {comp.device}")
            for line in probe_components(comp):
                con.print(line, markup=False)
            con.print(f"estimator {cell.recipe.estimator.name}, balancer {cell.recipe.balancer.name}")
        con.print(f"dry run: {len(cells)} configuration(s) built, no training")
        return
    from rdmx.run import default_out_dir, run_recipe

    from rdmx.train.distributed import from_environment, shutdown

    submission = None
    if submit is not None:
        from rdmx.launch import Submission, parse_params

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RdmxError("--submit sends the run to a scheduler; start it once, not under torchrun")
        submission = Submission(submit, jobs, parse_params(slurm), wait)
    elif slurm:
        raise RdmxError("--slurm needs --submit slurm")
    out_dir = out or default_out_dir(resolved)
    try:
        summary = run_recipe(resolved, out_dir, progress=not no_progress, resume=not fresh, submit=submission)
    finally:
        main = from_environment().main
        shutdown()
    if main and "submitted" in summary:
        _console().print(f"submitted: {summary['submitted']} (job ids; each run's folder has its run.log); run the "
                         f"same command without --submit when they finished to print the summary")
    elif main:
        _print_summary(summary, out_dir)


def _print_summary(summary: dict, out_dir: Path) -> None:
    from rich.table import Table

    con = _console()
    if "cells" in summary:
        table = Table(title=f"sweep {summary['recipe']}")
        keys = list(summary["cells"][0]["values"]) if summary["cells"] else []  # swept paths
        metric_keys = sorted({k for c in summary["cells"] for k in c["final"] if k.count("/") == 1})
        for col in [*keys, *metric_keys]:
            table.add_column(col)
        for c in summary["cells"]:
            shown = [v.get("name", str(v)) if isinstance(v, dict) else str(v) for v in (c["values"][k] for k in keys)]
            table.add_row(*shown, *[f"{c['final'].get(m, float('nan')):.4g}" for m in metric_keys])
        con.print(table)
        if (out_dir / "table.md").is_file():
            con.print((out_dir / "table.md").read_text(), markup=False)
    else:
        table = Table(title=f"{summary['recipe']}: {summary['steps']} steps in {summary['wall_time_s']:.1f} s")
        table.add_column("metric")
        table.add_column("step 0", justify="right")
        table.add_column("final", justify="right")
        encoders = set(summary.get("roles", {}))
        shown = [k for k in sorted(summary["final"])
                 if k.rsplit("/", 1)[-1] not in encoders or k.startswith("eval/sw_r/")]
        for k in shown:  # the means, and SW_r per encoder (everything else is in summary.json / MLflow)
            a = summary["initial"].get(k)
            table.add_row(k.removeprefix("eval/"), "" if a is None else f"{a:.4g}", f"{summary['final'][k]:.4g}")
        con.print(table)
        if (summary.get("eval_protocol") or {}).get("mmd_r"):
            con.print(f"MMDr {summary['eval_protocol']['mmd_r']}")
        if summary.get("sample_grid"):
            con.print(f"samples: {summary['sample_grid']}")
    con.print(f"summary: {out_dir / 'summary.json'}   tracking run: {summary.get('run_id') or '(tracking off)'}")


@app.command("eval")
def eval_cmd(
    recipe: Annotated[Path, typer.Argument(help="the recipe that trained the checkpoint")],
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", "-c", help="checkpoint: RUN/checkpoints/step-NNNNNN, a run folder (its newest), or a 0.1 .pt file; "
                                   "none or 'base': the recipe's generator as built (its warm start)")] = None,
    n: Annotated[Optional[int], typer.Option("--n", min=2, help="samples and rows per real set for every metric; default eval.n (SW_rK, FD) and eval.mmd_n (MMDr)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder for eval.json")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="text-to-image: evaluate on these prompts "
                                                    "(e.g. COCO-val captions, Pick-a-Pic test prompts)")] = None,
    key: Annotated[str, typer.Option("--key", help="prompt field of a .jsonl/.csv prompt file")] = "prompt",
    per_prompt: Annotated[int, typer.Option("--per-prompt", min=1, help="samples per prompt with --prompts "
                                            "(per class with --class-prompts)")] = 1,
    class_prompts: Annotated[Optional[str], typer.Option("--class-prompts", help="class-conditional: every class "
                             "--per-prompt times, scored against this template, e.g. 'a photo of a {class}' "
                             "(ImageNet names: torchvision's list; the paper's Fig. 6)")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="checkpoint (or 'base') rendered from the "
                                                     "same noise and prompts: metrics report win rates over it")] = None,
    baseline_set: Annotated[Optional[list[str]], typer.Option("--baseline-set", help="override for the baseline's "
                            "recipe only, e.g. generator.steps=4 (the 4-step teacher); repeatable")] = None,
    set_: SetOpt = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    fid: Annotated[bool, typer.Option("--fid", help="also FID-50K as the literature computes it (rdmx-fid)")] = False,
    eval_set: Annotated[Optional[list[str]], typer.Option(
        "--set-eval", help="an evaluation-time override the checkpoint need not share, e.g. generator.ctx_len=232 "
                           "(the release's PickScore protocol); recorded in eval.json (repeatable)")] = None,
    weights: Annotated[str, typer.Option("--weights", help="the checkpoint's EMA or raw weights (auto: the EMA "
                                         "when it has one)")] = "auto",
) -> None:
    """Evaluate a checkpoint: SW_rK over training and held-out encoders, MMDr, FD (text-joint too),
    FID-50K with --fid, and the recipe's metrics (e.g. PickScore and its win rate over --baseline)."""
    from rdmx.checkpoints import evaluate_checkpoint
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    pool = None
    if prompts is not None and class_prompts is not None:
        raise RdmxError("--prompts and --class-prompts exclude each other: prompts for a text-to-image generator, "
                        "class prompts for a class-conditional one")
    if prompts is not None:
        from rdmx.data.prompts import read_prompts

        pool = read_prompts(prompts, key=key)
        if n is not None:
            pool = pool[:n]
    result = evaluate_checkpoint(resolved, checkpoint, n=n, out=out, progress=not no_progress, prompts=pool, fid=fid,
                                 per_prompt=per_prompt, baseline=baseline, baseline_set=baseline_set, weights=weights,
                                 eval_set=eval_set, class_prompts=class_prompts)
    result.render(_console(), title=f"{resolved.recipe.name} @ step {result.settings['step']} "
                                    f"({result.settings['weights']} weights)")
    extra = {k: v for k, v in result.summary.items() if not k.startswith(("sw_rK", "mmd_r"))}
    for k, v in sorted(extra.items()):
        _console().print(f"{k}: {v:.4f}")
    if out:
        _console().print(f"written: {out / 'eval.json'}")


@app.command("sample")
def sample_cmd(
    recipe: Annotated[Path, typer.Argument(help="the recipe that trained the checkpoint")],
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", "-c", help="checkpoint: RUN/checkpoints/step-NNNNNN, a run folder (its newest), or a 0.1 .pt file; "
                                   "none or 'base': the recipe's generator as built (its warm start)")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="number of samples (grid format)")] = 64,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("samples"),
    fmt: Annotated[str, typer.Option("--format", help="grid: PNG grids + samples.npz; geneval: the official "
                                     "GenEval folder layout for --prompts (a GenEval metadata .jsonl)")] = "grid",
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="prompt file for a text-to-image generator "
                                                    "(.txt/.jsonl/.csv/.json; GenEval metadata for --format geneval)")] = None,
    per_prompt: Annotated[int, typer.Option("--per-prompt", min=1, help="GenEval samples per prompt")] = 4,
    set_: SetOpt = None,
    weights: Annotated[str, typer.Option("--weights", help="the checkpoint's EMA or raw weights (auto: the EMA "
                                         "when it has one)")] = "auto",
) -> None:
    """Write labelled PNG grids and an ADM-compatible samples.npz, or GenEval's folder layout, from a checkpoint."""
    from rdmx.checkpoints import geneval_checkpoint, sample_checkpoint
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    if fmt == "geneval":
        if prompts is None:
            raise RdmxError("--format geneval needs --prompts GENEVAL_METADATA.jsonl (one JSON object per prompt)")
        folder = geneval_checkpoint(resolved, checkpoint, prompts, out=out, per_prompt=per_prompt, weights=weights)
        _console().print(f"GenEval layout in {folder} (protocol: {folder / 'geneval_protocol.json'}); score it "
                         f"with the official scorer:\n  rdmx geneval-score {folder} --scorer <geneval clone> "
                         f"--detector <mask2former folder> --config <mmdet's builtin mask2former config>")
        return
    if fmt != "grid":
        raise RdmxError(f"--format must be 'grid' or 'geneval', got {fmt!r}")
    pool = None
    if prompts is not None:
        from rdmx.data.prompts import read_prompts

        pool = read_prompts(prompts)
    try:
        paths = sample_checkpoint(resolved, checkpoint, n=n, out=out, prompts=pool, weights=weights)
    except ValueError as exc:
        raise RdmxError(str(exc)) from None
    grids = sum(k.startswith("grid") for k in paths)
    _console().print(f"{n} samples → {paths['npz']} and {grids} grid(s) in {out}")


@app.command("geneval-score")
def geneval_score_cmd(
    render: Annotated[Path, typer.Argument(help="a GenEval render of rdmx sample --format geneval")],
    scorer: Annotated[Path, typer.Option("--scorer", help="a clone of djghosh13/geneval in an environment with its "
                                         "detector stack (mmdet 3.3.0)")],
    detector: Annotated[Path, typer.Option("--detector", help="the folder holding the Mask2Former Swin-S checkpoint as "
                                           "mask2former.pth")],
    config: Annotated[Optional[Path], typer.Option("--config", help="the detector config: the mmdet package's "
                                                   "builtin mask2former_swin-s config (the release's protocol)")] = None,
    python: Annotated[Optional[str], typer.Option("--python", help="the scorer environment's python "
                                                  "(default: this one)")] = None,
) -> None:
    """Score a GenEval render with the official scorer; the per-task rates and the overall score
    (their unweighted mean) go to RENDER/eval.json beside the render's protocol."""
    from rich.table import Table

    from rdmx.geneval import score

    summary = score(render, scorer=scorer, detector=detector, config=config, python=python)
    table = Table(title=f"GenEval, {summary['images']} images")
    table.add_column("task")
    table.add_column("correct", justify="right")
    for task, rate in summary["tasks"].items():
        table.add_row(task, f"{rate:.4f}")
    table.add_row("overall", f"{summary['overall']:.4f}")
    con = _console()
    con.print(table)
    con.print(f"recorded in {render / 'eval.json'}")


@app.command("compare-evals")
def compare_evals_cmd(
    a: Annotated[Path, typer.Argument(help="an eval.json (or the folder holding it)")],
    b: Annotated[Path, typer.Argument(help="another eval.json (or folder)")],
    json_out: Annotated[bool, typer.Option("--json", help="the rows as JSON")] = False,
) -> None:
    """Two evaluations side by side, refused (naming the field) when their protocols differ:
    sample counts, seed, quantisation, encoders (fingerprint, weights revision, resize), real data
    and rows, metrics. Library versions that differ are listed, not refused."""
    from rich.table import Table

    from rdmx.evaluate.protocol import compare_evals

    rows, versions = compare_evals(a, b)
    if json_out:
        typer.echo(json.dumps({"rows": [{"metric": m, "a": x, "b": y} for m, x, y in rows],
                               "versions": [{"library": k, "a": x, "b": y} for k, x, y in versions]}, indent=1))
        return
    table = Table(title="evaluations (same protocol)", caption=f"A = {a}\nB = {b}")
    for col in ("metric", "A", "B", "B - A"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for metric, x, y in rows:
        both = isinstance(x, (int, float)) and isinstance(y, (int, float))
        table.add_row(metric, _num(x), _num(y), _num(y - x) if both else "")
    con = _console()
    con.print(table)
    for lib, x, y in versions:
        con.print(f"note: {lib} {x or '(absent)'} vs {y or '(absent)'}")


def _num(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-" if v is None else str(v)
    return f"{v:.6g}"


@app.command("ema")
def ema_cmd(
    run: Annotated[Path, typer.Argument(help="a run folder whose [train.ema] tracked posthoc profiles")],
    sigma_rel: Annotated[list[float], typer.Option("--sigma-rel", help="the EMA width(s) to reconstruct, e.g. 0.05 "
                                                   "(repeatable: a sweep)")],
    step: Annotated[Optional[int], typer.Option("--step", help="the snapshot (milestone) step; default the newest")] = None,
    evaluate: Annotated[bool, typer.Option("--eval", help="evaluate each reconstruction (rdmx eval with the run's "
                                           "recipe) and print them side by side")] = False,
    n: Annotated[Optional[int], typer.Option("--n", min=2, help="with --eval: samples per metric")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Post-hoc EMA (EDM2): the EMA of any width, rebuilt from the run's snapshots, as checkpoints
    that eval / sample / export take (RUN/posthoc/sigma-<σ>-step-<k>)."""
    from rdmx.posthoc import reconstruct

    con = _console()
    made = []
    for s in sigma_rel:
        try:
            folder, report = reconstruct(run, s, step=step)
        except ValueError as exc:
            raise RdmxError(f"--sigma-rel {s}: {exc}") from None
        made.append((s, folder, report))
        con.print(f"σ_rel {s:.3f} at step {report['step']}: {folder}  ({report['snapshots']} snapshots, misplaced "
                  f"step mass {report['residual_mass']:.2e})")
    if not evaluate:
        return
    from rich.table import Table

    from rdmx.checkpoints import evaluate_checkpoint
    from rdmx.recipe import load_recipe

    resolved = load_recipe(run / "recipe.resolved.toml")
    rows = []
    for s, folder, _ in made:
        result = evaluate_checkpoint(resolved, folder, n=n, out=folder, progress=not no_progress, log=False)
        rows.append((s, result.summary))
    keys = sorted({k for _, summary in rows for k in summary if k.startswith(("sw_rK", "mmd_r"))})
    table = Table(title=f"post-hoc EMA of {run}")
    for col in ["σ_rel", *keys]:
        table.add_column(col, justify="right")
    for s, summary in rows:
        table.add_row(f"{s:.3f}", *[f"{summary.get(k, float('nan')):.4g}" for k in keys])
    con.print(table)


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="a checkpoint folder, a run folder (its newest) or a post-hoc EMA")],
    fmt: Annotated[str, typer.Option("--format", help="safetensors (any generator), or the generator plugin's own: "
                                     "release (pMF's .pth), diffusers (FLUX.2 [klein])")] = "safetensors",
    out: Annotated[Path, typer.Option("--out", "-o", help="a new (or empty) folder")] = Path("export"),
    weights: Annotated[str, typer.Option("--weights", help="the checkpoint's EMA or raw weights (auto: the EMA when "
                                         "it has one)")] = "auto",
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="the recipe that made it (default: the run's "
                                                   "recipe.resolved.toml)")] = None,
    eval_json: Annotated[Optional[Path], typer.Option("--eval-json", help="the figures for the model card (default: "
                                                      "the run's summary)")] = None,
) -> None:
    """Export a trained generator: safetensors + config + model card (the Hub's layout), or a
    plugin's format (the paper's .pth, a diffusers pipeline)."""
    from rdmx.export import export_checkpoint

    files = export_checkpoint(checkpoint, fmt, out, weights=weights, recipe=recipe, eval_json=eval_json)
    size = sum(p.stat().st_size for p in files)
    _console().print(f"exported {len(files)} files ({size / 2**20:.1f} MiB) to {out}")


@app.command("render")
def render_cmd(
    recipe: Annotated[Path, typer.Argument(help="a text-to-image recipe (its generator renders)")],
    prompts: Annotated[Path, typer.Option("--prompts", help="prompt file (.txt/.jsonl/.csv/.json, COCO captions)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder: images/ and captions.jsonl")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="checkpoint, or 'base' (the teacher)")] = Path("base"),
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Euler steps (the teacher: 4); sets generator.steps")] = 4,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="renders per prompt")] = 24,
    keep: Annotated[int, typer.Option("--keep", min=1, help="best renders kept per prompt")] = 3,
    key: Annotated[str, typer.Option("--key", help="prompt field of a .jsonl/.csv prompt file")] = "prompt",
    shard: Annotated[str, typer.Option("--shard", help="j/n: render prompts i = j mod n (one GPU each)")] = "0/1",
    batch: Annotated[int, typer.Option("--batch", min=1, help="images per generator call")] = 8,
    set_: SetOpt = None,
) -> None:
    """Teacher renders for a reference: the PickScore-best KEEP of SEEDS renders per prompt, written as
    captioned data (images/ + captions.jsonl) for the captioned-images dataset."""
    from rdmx.checkpoints import load_generator
    from rdmx.data.prompts import read_prompts
    from rdmx.plugins import get_plugins
    from rdmx.recipe import load_recipe
    from rdmx.render import render_reference

    overrides = list(set_ or []) + ([f"generator.steps={steps}"] if steps is not None else [])
    resolved = load_recipe(recipe, overrides)
    try:
        j, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise RdmxError(f"--shard must look like j/n (e.g. 0/8), got {shard!r}") from None
    blocks = [(i, m) for i, m in enumerate(resolved.recipe.eval.metrics) if m.name == "pickscore"]
    config = resolved.config(f"eval.metrics[{blocks[0][0]}]") if blocks else None
    metric = get_plugins().get("metrics", "pickscore", where="rdmx render (scorer)").build(config)
    comp, _ = load_generator(resolved, checkpoint)
    path = render_reference(comp.generator, read_prompts(prompts, key=key), out, score=metric.scorer.score,
                            seeds=seeds, keep=keep, device=comp.device, batch=batch, shard=(j, n))
    _console().print(f"renders in {out}; captions: {path}  (data.name = \"captioned-images\", path = {out}, "
                     f"captions = {path})")


UI_STORES = {"file", "sqlite", "postgresql", "mysql", "mssql"}  # MLflow's backend stores


@app.command("ui")
def ui_cmd(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port on 127.0.0.1")] = 5000,
    uri: Annotated[Optional[str], typer.Option(help="backend store URI (default: the one runs use)")] = None,
) -> None:
    """Start the MLflow UI on the store in use, bound to 127.0.0.1."""
    import subprocess

    from rdmx.track.mlflow_tracker import tracking_uri

    store = tracking_uri(uri)
    scheme = store.split("://", 1)[0].split("+", 1)[0] if "://" in store else "file"
    if scheme not in UI_STORES:
        raise RdmxError(f"rdmx ui: the MLflow UI reads a backend store ({', '.join(sorted(UI_STORES))}), not "
                        f"{store!r} (from --uri or $MLFLOW_TRACKING_URI); a tracking server has its own UI")
    import signal
    import socket

    with socket.socket() as s:  # a busy port is one line, not a server that exits at once
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise RdmxError(f"rdmx ui: port {port} on 127.0.0.1 is in use (another rdmx ui?); pick another "
                            f"with --port") from None
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", store]
    typer.echo(f"MLflow UI on http://127.0.0.1:{port}  (store {store})")
    proc = subprocess.Popen(cmd, start_new_session=True)  # its own process group: the server and its workers

    def stop(signum, frame):  # SIGTERM / SIGINT: the whole group goes, nothing is left running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        code = proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    raise typer.Exit(0 if code in (0, -signal.SIGTERM) else code)


new_app = typer.Typer(help="Start a plugin package from rdmx's template.", no_args_is_help=True)


@new_app.command("plugin")
def new_plugin_cmd(
    kind: Annotated[str, typer.Argument(help="what it registers: encoder")],
    name: Annotated[str, typer.Argument(help="the component's name (what recipes write), e.g. my-encoder")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder (default: rdmx-NAME)")] = None,
) -> None:
    """A plugin package whose tests and dry run pass as written: pip install -e it, then fill it in."""
    from rdmx.scaffold import new_plugin

    files = new_plugin(kind, name, out)
    root = files[0].parent
    typer.echo(f"{len(files)} files in {root}: pip install -e {root} && python -m pytest {root / 'tests'}")


def _mount_subcommands() -> None:
    from rdmx.cli_reference import app as reference_app
    from rdmx.cli_weights import app as weights_app

    app.add_typer(reference_app, name="reference", help="Build frozen reference bundles, floors and banks.")
    app.add_typer(weights_app, name="weights", help="Pretrained weights of encoders and generators.")
    app.add_typer(new_app, name="new", help="Start a plugin package from rdmx's template.")


_mount_subcommands()
_MOUNTED: set[int] = set()


def mount_plugin_commands(args: list[str]) -> None:
    """Add the plugins' commands (hook ``rdmx_register_commands``) to the app. Skipped when the
    command line names one of rdmx's own commands, so those start without loading plugins."""
    from rdmx.plugins import BUILTIN_COMMANDS

    first = next((a for a in args if not a.startswith("-")), None)
    if first in BUILTIN_COMMANDS:
        return
    from typer.models import CommandInfo

    from rdmx.plugins import get_plugins

    for _, cmd in get_plugins().commands():
        if id(cmd) in _MOUNTED:
            continue
        _MOUNTED.add(id(cmd))
        (app.registered_commands if isinstance(cmd, CommandInfo) else app.registered_groups).append(cmd)


def _click_exceptions():
    """(ClickException, UsageError, NoArgsIsHelpError, Abort) classes of the click typer runs on:
    typer >= 0.16 raises its vendored ``typer._click`` ones, older typer the real click's."""
    try:
        from typer._click import exceptions as exc
        from typer.exceptions import Abort
    except ImportError:  # older typer: plain click
        from click import exceptions as exc

        Abort = exc.Abort
    return exc.ClickException, exc.UsageError, getattr(exc, "NoArgsIsHelpError", None), Abort


def _usage_line(exc) -> str:
    """A usage error as one line: the message and where the help is."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = " ".join(exc.format_message().split())
    return f"error: {message}{where}"


def _thread_option(args: list[str]) -> str | None:
    """``--threads N`` (or ``--threads=N``) before the command: read here, before torch is imported."""
    for i, a in enumerate(args):
        if a == "--threads" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
        if not a.startswith("-"):
            break  # the command: its own options follow
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes print one clear line and exit 2 (a traceback only with --debug)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("RDMX_DEBUG", "") not in ("", "0")
    click_error, usage_error, no_args_help, abort = _click_exceptions()
    from rdmx.train.stop import EXIT_STOPPED, RunStopped

    try:
        from rdmx import threads

        if "--trust-code" in args:
            os.environ["RDMX_TRUST_CODE"] = "1"  # the person running the command says so (rdmx.trust)
        threads.apply(_thread_option(args))  # before torch starts its thread pool (said when components are built)
        mount_plugin_commands(args)
        rv = app(args=args, prog_name="rdmx", standalone_mode=False)
    except RunStopped as exc:  # a scheduler's signal: checkpointed, resumable (exit status 75)
        if os.environ.get("RANK", "0") == "0":
            typer.echo(f"rdmx: {exc}; run the same command again to resume (exit status {EXIT_STOPPED})", err=True)
        sys.exit(EXIT_STOPPED)
    except RdmxError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click_error as exc:
        if no_args_help is not None and isinstance(exc, no_args_help):
            exc.show()  # bare `rdmx`: the help text
            sys.exit(exc.exit_code)
        if debug:
            raise
        typer.echo(_usage_line(exc) if isinstance(exc, usage_error) else f"error: {exc.format_message()}", err=True)
        sys.exit(2 if isinstance(exc, usage_error) else exc.exit_code)
    except abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted; the last checkpoint (if any) is intact — run again to resume", err=True)
        sys.exit(130)
    except OSError as exc:  # a path the user gave that cannot be written or read: --out on a file, ...
        if exc.errno == errno.ENOSPC and not debug:  # the data written before is intact (atomic writes)
            where = exc.filename2 or exc.filename or "the disk being written"
            typer.echo(f"error: the disk is full ({where}): free some space there, or point the output elsewhere "
                       f"(--out, reference.cache_dir); what was written before is intact", err=True)
            sys.exit(2)
        if debug or not exc.filename:
            raise
        where = exc.filename2 or exc.filename  # a rename: its destination (not the temporary file)
        problem = "is a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror or exc
        typer.echo(f"error: {where}: {problem} (check the path: --out, reference.cache_dir, ...)", err=True)
        sys.exit(2)
    except Exception as exc:  # an out-of-memory error no command turned into its own message
        if debug or type(exc).__name__ != "OutOfMemoryError":
            raise
        typer.echo("error: out of memory: lower train.micro_batch (or set it to \"auto\"), eval.chunk or "
                   "reference.batch_size, whichever step ran out (--debug shows where)", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
