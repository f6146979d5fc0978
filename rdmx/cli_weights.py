"""``rdmx weights``: list encoders' pretrained-weight status, fetch them into the local caches."""

from __future__ import annotations

import typer
from rdmx.console import console as Console
from rich.table import Table

from rdmx.errors import RdmxError

app = typer.Typer(help="Pretrained encoder and generator weights: status and download.", no_args_is_help=True)


def _registry():
    from rdmx.represent.weights import _registry as weights_registry

    return weights_registry()  # encoders and generators


@app.command("list")
def list_weights() -> None:
    """Every registered encoder and generator with its checkpoint and whether its weights are cached."""
    from rdmx.represent.weights import status

    table = Table("name", "plugin", "checkpoint", "weights", "source")
    for s in status(_registry()):
        color = {"cached": "green", "missing": "red"}.get(s.label, "dim")
        table.add_row(s.name, s.plugin, s.checkpoint, f"[{color}]{s.label}[/{color}]", s.where)
    Console().print(table)


@app.command("fetch")
def fetch_weights(names: list[str] = typer.Argument(..., help="encoder or generator names, e.g. dinov2 flux2-klein")) -> None:
    """Download the named encoders' or generators' weights into the Hugging Face / torch hub caches."""
    from rdmx.represent.weights import fetch

    try:
        for s in fetch(names, _registry()):
            Console().print(f"{s.name}: {s.label}")
    except RdmxError as exc:
        Console(True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
