"""The ``rdmx`` command line. Heavy backends (torch, mlflow) are imported only inside commands."""

from __future__ import annotations

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


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    _STATE["debug"] = debug or os.environ.get("RDMX_DEBUG", "") not in ("", "0")


def _console(stderr: bool = False):
    from rdmx.console import console

    return console(stderr)


# -- inspection ---------------------------------------------------------------------------

_KIND_COLUMNS = {
    "encoders": ["resolution", "dim", "weights", "weights_available"],
    "datasets": ["kind", "classes"],
}


@app.command("list")
def list_cmd(
    kind: Annotated[Optional[str], typer.Argument(help=f"one of: {', '.join(KINDS)} (none: a count of each)")] = None,
    pattern: Annotated[str, typer.Argument(help="glob filter on names, e.g. 'toy-*'")] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List registered components of one kind."""
    from rdmx.errors import close_matches
    from rdmx.plugins import get_plugins

    if kind is None:
        plugins = get_plugins()
        counts = {k: len(plugins.registry(k)) for k in KINDS}
        if as_json:
            typer.echo(json.dumps(counts))
        else:
            for k, v in counts.items():
                typer.echo(f"{k:<11} {v:>3}   rdmx list {k}")
        return
    if kind not in KINDS:
        raise RdmxError(f"unknown kind '{kind}'{close_matches(kind, KINDS)}; kinds: {', '.join(KINDS)}")
    plugins = get_plugins()
    entries = [e for e in plugins.registry(kind).entries() if fnmatch.fnmatch(e.name, pattern)]
    extra = _KIND_COLUMNS.get(kind, [])
    rows = []
    for e in entries:
        row = {"name": e.name, "plugin": e.plugin, "version": e.version, "description": e.description}
        for col in extra:
            row[col] = e.meta_value(col)
        rows.append(row)
    failed = [{"plugin": i.name, "distribution": i.distribution, "error": i.error} for i in plugins.failures()]
    if as_json:
        typer.echo(json.dumps({"kind": kind, "components": rows, "failed_plugins": failed}, indent=2, default=str))
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
        con.print(f"[red]plugin '{f['plugin']}' ({f['distribution']}) failed[/red]: {f['error']}")


def _fmt(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
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
        } for i in infos], indent=2))
        return
    from rich.table import Table

    table = Table(title="rdmx plugins")
    for col in ("plugin", "distribution", "version", "hooks", "status"):
        table.add_column(col, overflow="fold")
    for i in infos:
        status = "[green]ok[/green]" if i.ok else f"[red]{i.status}[/red]: {i.error}"
        hooks = ", ".join(h.removeprefix("rdmx_register_") for h in i.hooks)
        table.add_row(i.name, i.distribution, i.version, hooks, status)
    _console().print(table)


@app.command("show")
def show_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the resolved, validated recipe and its fingerprint."""
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    if as_json:
        typer.echo(json.dumps({"fingerprint": resolved.fingerprint, "recipe": resolved.to_dict()}, indent=2))
        return
    from rdmx.tomlwrite import dumps

    typer.echo(f"# fingerprint: {resolved.fingerprint}")
    typer.echo(dumps(resolved.to_dict()))


# -- running -----------------------------------------------------------------------------

@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML")],
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (summary.json, grids, checkpoints)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="build every component, then stop")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="ignore an existing checkpoint in --out")] = False,
) -> None:
    """Train a generator as the recipe says."""
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    con = _console()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        con.print(f"[bold]{resolved.recipe.name}[/bold]  fingerprint {resolved.fingerprint}")
    if dry_run:
        from rdmx.train.build import build_components

        cells = [resolved]
        if resolved.recipe.sweep:
            from rdmx.recipe import sweep_cells

            cells = [c for _, c in sweep_cells(resolved)]
        for cell in cells:
            comp = build_components(cell)
            n_gen = sum(p.numel() for p in comp.generator.parameters())
            con.print(f"generator {cell.recipe.generator.name}: {n_gen:,} parameters on {comp.device}")
            for k, enc in comp.encoders.items():
                con.print(f"encoder {k} ({comp.roles[k]}): dim {enc.spec.dim}, fingerprint {enc.fingerprint}")
            con.print(f"estimator {cell.recipe.estimator.name}, balancer {cell.recipe.balancer.name}")
        con.print(f"dry run: {len(cells)} configuration(s) built, no training")
        return
    from rdmx.run import default_out_dir, run_recipe

    from rdmx.train.distributed import from_environment, shutdown

    out_dir = out or default_out_dir(resolved)
    try:
        summary = run_recipe(resolved, out_dir, progress=not no_progress, resume=not fresh)
    finally:
        main = from_environment().main
        shutdown()
    if main:
        _print_summary(summary, out_dir)


def _print_summary(summary: dict, out_dir: Path) -> None:
    from rich.table import Table

    con = _console()
    if "cells" in summary:
        table = Table(title=f"sweep {summary['recipe']}")
        keys = list(summary["sweep"])
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
        if summary.get("sample_grid"):
            con.print(f"samples: {summary['sample_grid']}")
    con.print(f"summary: {out_dir / 'summary.json'}   MLflow run: {summary.get('run_id') or '(tracking off)'}")


@app.command("eval")
def eval_cmd(
    recipe: Annotated[Path, typer.Argument(help="the recipe that trained the checkpoint")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="checkpoint file (.pt)")],
    n: Annotated[Optional[int], typer.Option("--n", help="samples (and rows per real set); default eval.n")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder for eval.json")] = None,
    set_: SetOpt = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Evaluate a checkpoint: SW_rK over training and held-out encoders, MMDr, FD."""
    from rdmx.checkpoints import evaluate_checkpoint
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    result = evaluate_checkpoint(resolved, checkpoint, n=n, out=out, progress=not no_progress)
    result.render(_console(), title=f"{resolved.recipe.name} @ step {result.settings['step']}")
    if out:
        _console().print(f"written: {out / 'eval.json'}")


@app.command("sample")
def sample_cmd(
    recipe: Annotated[Path, typer.Argument(help="the recipe that trained the checkpoint")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="checkpoint file (.pt)")],
    n: Annotated[int, typer.Option("--n", help="number of samples")] = 64,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("samples"),
    set_: SetOpt = None,
) -> None:
    """Write labelled PNG grids and an ADM-compatible samples.npz from a checkpoint."""
    from rdmx.checkpoints import sample_checkpoint
    from rdmx.recipe import load_recipe

    resolved = load_recipe(recipe, set_)
    try:
        paths = sample_checkpoint(resolved, checkpoint, n=n, out=out)
    except ValueError as exc:
        raise RdmxError(str(exc)) from None
    _console().print(f"{n} samples → {paths['npz']} and {len(paths) - 1} grid(s) in {out}")


@app.command("ui")
def ui_cmd(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    uri: Annotated[Optional[str], typer.Option(help="backend store URI (default: the one runs use)")] = None,
) -> None:
    """Start the MLflow UI on the store in use, bound to 127.0.0.1."""
    import subprocess

    from rdmx.track.mlflow_tracker import tracking_uri

    store = tracking_uri(uri)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", store]
    typer.echo(f"MLflow UI on http://127.0.0.1:{port}  (store {store})")
    raise typer.Exit(subprocess.call(cmd))


def _mount_subcommands() -> None:
    from rdmx.cli_reference import app as reference_app
    from rdmx.cli_weights import app as weights_app

    app.add_typer(reference_app, name="reference", help="Build frozen reference bundles, floors and banks.")
    app.add_typer(weights_app, name="weights", help="Pretrained weights of the encoder presets.")


_mount_subcommands()


def main() -> None:
    """Entry point: user mistakes print one clear message (no traceback unless --debug)."""
    import click

    debug = "--debug" in sys.argv[1:] or os.environ.get("RDMX_DEBUG", "") not in ("", "0")
    try:
        rv = app(standalone_mode=False)
    except RdmxError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted; the last checkpoint (if any) is intact — run again to resume", err=True)
        sys.exit(130)
    except Exception as exc:  # an out-of-memory error no command turned into its own message
        if debug or type(exc).__name__ != "OutOfMemoryError":
            raise
        typer.echo("error: out of memory: lower train.micro_batch (or set it to \"auto\"), eval.chunk or "
                   "reference.batch_size, whichever step ran out (--debug shows where)", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
