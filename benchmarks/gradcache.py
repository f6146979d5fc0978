"""Benchmark: the cost of gradient caching. One training step (generate → encode → loss →
backward) of the quickstart's generator and battery at generated batch N, computed
  direct : one ordinary forward/backward over the whole batch (the baseline)
  cached : gradient caching with micro-chunks (no-grad pass, loss on all features, replay)
Both give the same gradient (tests/test_gradcache.py); caching trades one extra forward for
memory bounded by one chunk. Prints time per step and peak memory (CUDA: max allocated;
CPU: peak RSS growth sampled in a thread; every (N, mode) runs in a fresh process so the
allocator's cache of an earlier measurement cannot hide memory).

  python benchmarks/gradcache.py [--batches 256 1024 4096] [--micro 64] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import psutil
import torch

from rdmx.recipe import load_recipe
from rdmx.reference.bundle import build_reference
from rdmx.train.build import build_components
from rdmx.train.gradcache import cached_backward, direct_backward
from rdmx.train.objective import make_loss_fn


class PeakRSS:
    def __init__(self):
        self.proc, self.peak, self.stop = psutil.Process(os.getpid()), 0, False

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()

    @property
    def mib(self):
        return max(self.peak - self.base, 0) / 2**20


def measure(n: int, mode: str, micro: int, repeats: int, device: str) -> dict:
    resolved = load_recipe("recipes/quickstart.toml", ["tracking.backend=none", f"train.device={device}"])
    c = build_components(resolved)
    dev = c.device
    real = torch.stack([c.data.train[i][0] for i in range(len(c.data.train))]).to(dev)
    labels = torch.stack([c.data.train[i][1] for i in range(len(c.data.train))]).to(dev)
    train = {k: c.encoders[k] for k in c.train_names}
    refs = {}
    for k, enc in train.items():
        with torch.no_grad():
            f = torch.cat([enc(real[s:s + 256]) for s in range(0, len(real), 256)])
        refs[k] = build_reference(lambda f=f: iter([(f, labels)]), c.estimator.request(), joint=resolved.recipe.joint,
                                  encoder_fingerprint=enc.fingerprint, data_fingerprint="bench", device=dev)
    loss_fn = make_loss_fn(c.estimator, refs, {k: 1.0 for k in train})
    gen = c.generator
    g = torch.Generator().manual_seed(0)
    noise, cond = gen.sample_noise(n, g, dev), gen.sample_conditions(n, g, dev)
    times, peaks = [], []
    for _ in range(repeats + 1):
        gen.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            if mode == "direct":
                direct_backward(gen, train, noise, cond, loss_fn)
            else:
                cached_backward(gen, train, noise, cond, loss_fn, micro)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20 if dev.type == "cuda" else rss.mib)
    return {"ms": statistics.median(times[1:]) * 1e3, "mib": max(peaks), "device": str(dev),
            "params": sum(p.numel() for p in gen.parameters()), "encoders": len(train)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--micro", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.micro, args.repeats, args.device)))
        return
    header = False
    for n in args.batches:
        results = {}
        for mode in ("direct", "cached"):
            out = subprocess.run([sys.executable, __file__, "--one", str(n), mode, "--micro", str(args.micro),
                                  "--repeats", str(args.repeats), "--device", args.device],
                                 capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        if not header:
            r = results["direct"]
            print(f"device {r['device']}, generator {r['params']:,} params, {r['encoders']} training encoders, "
                  f"micro-chunk {args.micro}")
            print(f"{'N':>6} {'mode':>7} {'ms/step':>9} {'peak MiB':>9} {'× direct time':>14} {'× direct mem':>13}")
            header = True
        d = results["direct"]
        for mode, r in results.items():
            print(f"{n:>6} {mode:>7} {r['ms']:>9.1f} {r['mib']:>9.1f} {r['ms'] / d['ms']:>14.2f} "
                  f"{r['mib'] / max(d['mib'], 1e-9):>13.2f}")


if __name__ == "__main__":
    main()
