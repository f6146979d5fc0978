"""``rdmx weights``: the pretrained-weight status of encoders, generators and metrics; fetch them into the local caches."""

from __future__ import annotations

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

    table = Table("name", "kind", "plugin", "checkpoint", "weights", "source")
    for s in status(_registry()):
        color = {"cached": "green", "missing": "red"}.get(s.label, "dim")
        table.add_row(s.name, s.kind[:-1], s.plugin, s.checkpoint, f"[{color}]{s.label}[/{color}]", s.where)
    Console().print(table)


@app.command("fetch")
def fetch_weights(names: list[str] = typer.Argument(..., help="encoder, generator or metric names, e.g. dinov2 pmf-h fid")) -> None:
    """Download the named components' weights into the Hugging Face / torch hub caches."""
    from rdmx.represent.weights import fetch

    for s in fetch(names, _registry()):  # an unknown name or a failed download: one line, exit 2 (rdmx.cli)
        Console().print(f"{s.name} ({s.kind[:-1]}): {s.label} in {s.path or s.where}")
