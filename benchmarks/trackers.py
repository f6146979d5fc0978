"""Benchmark: what tracking costs the training loop. Each tracker receives what a run sends —
start (the quickstart's resolved recipe as parameters), ROWS metric rows of 40 values (a 14-encoder
battery logs raw/weight/lambda per encoder), a sample grid every 100 rows, the summary, end —
through rdmx's SafeTracker, against the local metrics.jsonl alone (tracking.backend = "none")
measured in the same run.

  python benchmarks/trackers.py [--rows 500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def make(name: str, folder: Path, resolved):
    from rdmx.plugins import get_plugins
    from rdmx.recipe import load_recipe

    options = {"none": {}, "mlflow": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
               "tensorboard": {"logdir": str(folder / "tb")},
               "wandb": {"mode": "offline", "dir": str(folder), "system_metrics": False}}[name]
    entry = get_plugins().get("trackers", name)
    return entry.build(entry.config.model_validate(options))


def run(name: str, rows: int, grid: Path, resolved) -> tuple[float, float, float]:
    from rdmx.track.safe import SafeTracker

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tracker = SafeTracker(make(name, folder, resolved), local=folder / "metrics.jsonl")
        t0 = time.perf_counter()
        tracker.start("bench", resolved.to_dict())
        t1 = time.perf_counter()
        for step in range(1, rows + 1):
            tracker.log_metrics({f"m{i}/enc": float(step * i) for i in range(40)}, step)
            if step % 100 == 0:
                tracker.log_artifact(grid, "samples")
        t2 = time.perf_counter()
        tracker.log_summary({"final": {"sw_rK": 1.0}})
        tracker.end()
        t3 = time.perf_counter()
    return t1 - t0, (t2 - t1) / rows * 1e3, t3 - t2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rdmx.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    resolved = load_recipe(root / "recipes" / "quickstart.toml", ["tracking.backend=none"])
    grid = root / "docs" / "assets" / "quickstart-step450.png"
    print(f"{args.rows} rows of 40 metrics, a grid every 100 rows (CPU, {os.cpu_count()} cores)")
    print(f"{'tracker':<34} {'start s':>8} {'ms / row':>9} {'end s':>7} {'× none per row':>15}")
    base = None
    for name in ("none", "mlflow", "tensorboard", "wandb"):
        start, per_row, end = run(name, args.rows, grid, resolved)
        base = base or per_row
        label = "none (metrics.jsonl only, baseline)" if name == "none" else name
        print(f"{label:<34} {start:>8.2f} {per_row:>9.3f} {end:>7.2f} {per_row / base:>15.1f}")


if __name__ == "__main__":
    main()
