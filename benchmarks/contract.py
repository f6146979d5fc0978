"""What the encoders' behavioural contract adds to a run's start: ``check_behaviour`` (rdmx.train.build)
on a recipe's battery, median of 5, beside the time to build the components, in one run.

    python benchmarks/contract.py                      # the quickstart
    python benchmarks/contract.py recipes/spiral_fig3.toml
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def main() -> None:
    from rdmx import threads

    threads.apply()
    from rdmx.recipe import load_recipe
    from rdmx.train.build import build_components, check_behaviour

    recipe = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "recipes" / "quickstart.toml")
    t0 = time.perf_counter()
    comp = build_components(load_recipe(recipe))
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        check_behaviour(comp)
        times.append(time.perf_counter() - t0)
    print(f"{Path(recipe).name}: {len(comp.encoders)} encoders; building the components {build_s:.2f} s; the "
          f"behavioural contract {statistics.median(times):.3f} s (median of 5; {threads.decided().describe()})")


if __name__ == "__main__":
    main()
