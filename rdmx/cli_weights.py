"""``rdmx weights``: list encoders' pretrained-weight status, fetch them into the local caches."""

from __future__ import annotations

import typer
from rdmx.console import console as Console
from rich.table import Table

from rdmx.errors import RdmxError

app = typer.Typer(help="Pretrained encoder weights: status and download.", no_args_is_help=True)


def _registry():
    """The registry to list; None = every encoder and every metric that declares weights (fid)."""
    return None



@app.command("list")
def list_weights() -> None:
    """Every registered encoder with its checkpoint and whether its weights are cached."""
    from rdmx.represent.weights import status

    table = Table("encoder", "plugin", "checkpoint", "weights", "source")
    for s in status(_registry()):
        color = {"cached": "green", "missing": "red"}.get(s.label, "dim")
        table.add_row(s.name, s.plugin, s.checkpoint, f"[{color}]{s.label}[/{color}]", s.where)
    Console().print(table)


@app.command("fetch")
def fetch_weights(names: list[str] = typer.Argument(..., help="encoder (or metric) names, e.g. dinov2 inception fid")) -> None:
    """Download the named encoders' weights into the Hugging Face / torch hub caches."""
    from rdmx.represent.weights import fetch

    try:
        for s in fetch(names, _registry()):
            Console().print(f"{s.name}: {s.label}")
    except RdmxError as exc:
        Console(True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
