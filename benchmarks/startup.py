"""Benchmark: CLI start-up. `rdmx --help` and `rdmx list encoders` against a bare interpreter
(`python -c pass`) and against `import torch` measured in the same run.

  python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import torch' (what we avoid)": [sys.executable, "-c", "import torch"],
    "rdmx --help": [sys.executable, "-m", "rdmx.cli", "--help"],
    "rdmx list encoders": [sys.executable, "-m", "rdmx.cli", "list", "encoders"],
    "rdmx plugins": [sys.executable, "-m", "rdmx.cli", "plugins"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rows = []
    for name, cmd in COMMANDS.items():
        subprocess.run(cmd, capture_output=True, env=env, check=True)  # warm the page cache
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=env, check=True)
            times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times), min(times)))
    base = rows[0][1]
    print(f"{'command':<44} {'median s':>9} {'min s':>7} {'× baseline':>11}")
    for name, med, mn in rows:
        print(f"{name:<44} {med:>9.3f} {mn:>7.3f} {med / base:>11.1f}")
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys; from rdmx.cli import app; from rdmx.plugins import get_plugins;"
         "get_plugins(); print(sorted(m for m in ('torch','timm','transformers','mlflow','open_clip','diffusers') if m in sys.modules))"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.strip()
    print(f"heavy modules imported by start-up + plugin loading: {heavy}")


if __name__ == "__main__":
    main()
