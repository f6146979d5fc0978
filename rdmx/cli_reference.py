"""``rdmx reference``: extract real features and build the frozen reference material.

``run_reference_build`` takes already-built components (data, encoders, estimator) so any
front end can call it; the ``build`` command only resolves a recipe into those components.
Under ``torchrun`` the command joins the process group from the launcher's environment and
the ranks share the extraction (see ``rdmx.reference.extract``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    name="reference", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Extract real features and build reference bundles, floors and evaluation banks.",
)


@app.callback()
def _group() -> None:
    """Extract real features and build reference bundles, floors and evaluation banks."""


def summary_rows(refs: dict[str, Any]) -> list[dict[str, Any]]:
    """One JSON-able row per encoder: role, fingerprint, sizes, bandwidth, floor, cache path."""
    rows = []
    for name, b in refs.items():
        ref = b.reference
        rows.append({
            "encoder": name,
            "role": b.role,
            "fingerprint": b.encoder_fingerprint,
            "dim": int(b.train_bank.shape[1]),
            "train_rows": None if ref is None else ref.rows,
            "landmarks": None if ref is None or ref.landmarks is None else int(ref.landmarks.shape[0]),
            "sigma": None if ref is None else ref.sigma,
            "floor": b.floor,
            "bank_rows": [int(b.train_bank.shape[0]), int(b.val_bank.shape[0])],
            "reference": str(b.paths.get("reference", "")),
        })
    return rows


def print_summary(refs: dict[str, Any], console=None) -> None:
    from rdmx.console import console as rich_console
    from rich.table import Table

    con = console or rich_console()
    table = Table(title="reference material")
    for col in ("encoder", "role", "fingerprint", "dim", "rows", "m", "sigma", "floor", "banks train/val"):
        table.add_column(col, justify="left" if col in ("encoder", "role", "fingerprint") else "right")

    def fmt(v, spec=".4g"):
        return "-" if v is None else format(v, spec)

    for r in summary_rows(refs):
        table.add_row(r["encoder"], r["role"], r["fingerprint"], str(r["dim"]), fmt(r["train_rows"], "d"),
                      fmt(r["landmarks"], "d"), fmt(r["sigma"]), fmt(r["floor"]),
                      f"{r['bank_rows'][0]}/{r['bank_rows'][1]}")
    con.print(table)


def run_reference_build(
    data: Any,
    encoders: dict[str, Any],
    estimator: Any = None,
    *,
    cache_dir: str | Path,
    train_names: list[str] | None = None,
    joint: Any = None,
    request: Any = None,
    floors: tuple[int, int] | None = (8, 5120),
    eval_rows: int = 16384,
    seed: int = 0,
    device: Any = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    console=None,
    quiet: bool = False,
    rebuild: bool = False,
    text_encoder: Any = None,
    rows: str = "random",
    first_rows: int = 0,
) -> dict[str, Any]:
    """Build (or reuse) every encoder's reference material and print a summary table.

    ``request`` defaults to ``estimator.request()``; see ``rdmx.reference.build.build_references``."""
    from rdmx.reference.build import build_references
    from rdmx.reference.extract import dist_rank_world

    refs = build_references(
        data, encoders, request, cache_dir=cache_dir, joint=joint, estimator=estimator,
        train_names=train_names, floors=floors, eval_rows=eval_rows, seed=seed, device=device,
        progress=progress, batch_size=batch_size, num_workers=num_workers, rebuild=rebuild,
        text_encoder=text_encoder, rows=rows, first_rows=first_rows,
    )
    if not quiet and dist_rank_world()[0] == 0:
        print_summary(refs, console)
    return refs


def join_process_group_from_env() -> bool:
    """Initialise torch.distributed when launched by torchrun with several processes."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


@app.command("build")
def build_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe TOML")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a field: path=value")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, help="images per encoder forward (default: the recipe's reference.batch_size)")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=0, help="DataLoader worker processes (default: the recipe's reference.workers)")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="recompute every bundle, floor and bank from the features")] = False,
) -> None:
    """Extract features and build every battery encoder's reference, floor and banks (resumable)."""
    from rdmx.recipe import load_recipe
    from rdmx.train.build import build_components

    joined = join_process_group_from_env()
    try:
        resolved = load_recipe(recipe, set_)
        from rdmx.train.distributed import from_environment

        c = build_components(resolved, local_rank=from_environment().local_rank)  # one GPU per rank
        r = resolved.recipe
        from rdmx.train.micro_batch import out_of_memory_hint

        batch_size = batch_size or r.reference.batch_size
        workers = r.reference.workers if workers is None else workers
        with out_of_memory_hint("the reference build", "--batch-size / reference.batch_size", batch_size):
            refs = run_reference_build(
                c.data, c.encoders, c.estimator, cache_dir=r.reference.cache_dir, train_names=c.train_names,
                joint=r.joint, floors=(r.reference.floor_draws, r.reference.floor_rows), eval_rows=r.eval.bank_rows(),
                seed=r.seed, device=c.device, batch_size=batch_size, num_workers=workers,
                progress=not no_progress, quiet=as_json, rebuild=rebuild, text_encoder=c.text_encoder,
                **r.reference.real_rows(r.eval),
            )
        if as_json:
            import json

            from rdmx.reference.extract import dist_rank_world

            if dist_rank_world()[0] == 0:
                typer.echo(json.dumps(summary_rows(refs), indent=2))
    finally:
        if joined:
            import torch

            torch.distributed.destroy_process_group()
