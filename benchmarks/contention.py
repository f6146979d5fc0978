"""How much one other busy process slows a run: the quickstart for a fixed number of steps (caches
warm, tracking off, the smallest evaluation), alone and beside ``python -c "while True: pass"``,
under several CPU thread settings, in one run; prints each time and the ratio busy / alone.

    python benchmarks/contention.py                       # rdmx's policy and torch's defaults
    python benchmarks/contention.py --steps 120 --settings rdmx,torch-default,passive,spin,one

Settings (environment of the run; rdmx's own policy is rdmx.threads):
  rdmx           what rdmx decides (nothing set by hand)
  torch-default  RDMX_THREAD_POLICY=off: torch's pool as wide as the machine, OpenMP's default waiting
  passive        torch's width, OMP_WAIT_POLICY=PASSIVE
  spin           torch's width, GOMP_SPINCOUNT=10000 (spin briefly, then sleep)
  one            OMP_NUM_THREADS=1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "quickstart.toml"
SETTINGS = {
    "rdmx": {},
    "torch-default": {"RDMX_THREAD_POLICY": "off"},
    "passive": {"RDMX_THREAD_POLICY": "off", "OMP_WAIT_POLICY": "PASSIVE"},
    "spin": {"RDMX_THREAD_POLICY": "off", "GOMP_SPINCOUNT": "10000"},
    "one": {"OMP_NUM_THREADS": "1"},
}
CLEAN = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "RDMX_THREAD_POLICY", "RDMX_THREADS", "MKL_NUM_THREADS")


def run(steps: int, cache: Path, out: Path, extra: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update({"HF_HUB_OFFLINE": "1", **extra})
    sets = [f"train.steps={steps}", "train.sample_every=0", "eval.every=0", "eval.n=64", "eval.directions=16",
            "tracking.backend=none", f"reference.cache_dir={json.dumps(str(cache))}"]
    cmd = [sys.executable, "-m", "rdmx.cli", "run", str(QUICK), *sum((["--set", s] for s in sets), []),
           "--out", str(out), "--fresh", "--no-progress"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--settings", default="rdmx,torch-default")
    args = ap.parse_args()
    names = args.settings.split(",")
    with tempfile.TemporaryDirectory(prefix="rdmx-contention-") as tmp:
        tmp = Path(tmp)
        run(2, tmp / "cache", tmp / "warm", {})  # caches warm: features, bundles, floors, banks
        rows = []
        for name in names:
            alone = run(args.steps, tmp / "cache", tmp / name, SETTINGS[name])
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                beside = run(args.steps, tmp / "cache", tmp / name, SETTINGS[name])
            finally:
                busy.kill()
                busy.wait()
            rows.append((name, alone, beside))
            print(f"{name:14s} alone {alone:6.1f} s   beside one busy process {beside:6.1f} s   ratio {beside / alone:5.2f}",
                  flush=True)
    print(f"\nquickstart, {args.steps} steps (N = 256), `rdmx run` wall time incl. start-up and two small "
          f"evaluations; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
