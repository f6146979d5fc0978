"""``rdmx weights``: the pretrained-weight status of encoders, generators and metrics; fetch them into the local caches."""

from __future__ import annotations

from pathlib import Path

import typer
from rdmx.console import console as Console
from rich.table import Table


app = typer.Typer(help="Pretrained encoder, generator and metric weights: status and download.", no_args_is_help=True)


def _registry():
    from rdmx.plugins import get_plugins
    from rdmx.represent.weights import WEIGHT_KINDS

    plugins = get_plugins()
    return [plugins.registry(k) for k in WEIGHT_KINDS]


@app.command("list")
def list_weights() -> None:
    """Every registered encoder and generator with its checkpoint and whether its weights are cached."""
    from rdmx.represent.weights import status

    table = Table("name", "kind", "plugin", "checkpoint", "weights", "revision", "source")
    missing = []
    for s in status(_registry()):
        color = {"cached": "green", "missing": "red"}.get(s.label, "dim")
        table.add_row(s.name, s.kind[:-1], s.plugin, s.checkpoint, f"[{color}]{s.label}[/{color}]", s.revision_label,
                      s.where)
        if s.detail and ("pinned" in s.detail or "in part" in s.detail):
            missing.append(f"{s.name}: {s.detail}")
    con = Console()
    con.print(table)
    for line in missing:  # a pin absent from the cache or a partial snapshot: say which
        con.print(f"[yellow]{line}[/yellow]")


@app.command("pin")
def pin_weights(
    names: list[str] = typer.Argument(..., help="encoder, generator or metric names whose hub weights to pin"),
    file: Path = typer.Option(..., "--file", help="the pins file (TOML) to write or update; use it with "
                                                  "RDMX_WEIGHTS_PINS=FILE"),
    online: bool = typer.Option(False, "--online", help="pin the hub's current main commit (else the cached one)"),
) -> None:
    """Pin hub revisions (commit hashes) in a pins file: from then on, with RDMX_WEIGHTS_PINS=FILE,
    those weights are looked up and fetched at that commit only, and the commit enters the
    encoders' fingerprints."""
    from rdmx.represent.weights import pin

    for repo, commit in pin(names, file, _registry(), online=online).items():
        Console().print(f"{repo} @ {commit}")
    Console().print(f"pinned in {file}; export RDMX_WEIGHTS_PINS={file.resolve()}")


@app.command("fetch")
def fetch_weights(names: list[str] = typer.Argument(..., help="encoder, generator or metric names, e.g. dinov2 pmf-h fid")) -> None:
    """Download the named components' weights into the Hugging Face / torch hub caches."""
    from rdmx.represent.weights import fetch

    for s in fetch(names, _registry()):  # an unknown name or a failed download: one line, exit 2 (rdmx.cli)
        Console().print(f"{s.name} ({s.kind[:-1]}): {s.label} in {s.path or s.where}")
