"""Benchmark: MMD-Nystrom (blocked) vs exact attraction against a real bank vs naive cdist.

For every (B, d, m): forward+backward time and peak memory of
  nystrom : rdmx's mmd-nystrom loss (blocked repulsion over the batch + m landmarks)
  exact   : the same blocked repulsion + exact attraction mean_ir k(g_i, r) over the whole bank
  naive   : the Nystrom loss written densely with torch.cdist and plain autograd (the baseline)
and the relative error of the Nystrom attraction against the exact one over the bank.
Features are synthetic (a Gaussian mixture with 64 components); generated = same mixture,
other weights and wider clusters. Peak memory: CUDA max_memory_allocated, CPU sampled RSS.

  python benchmarks/estimators.py                      # full grid, CUDA when available
  python benchmarks/estimators.py --quick              # CPU-sized grid (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import torch

from rdmx.compare.base import ReferenceRequest
from rdmx.compare.configs import MMDNystromConfig
from rdmx.compare.kernels import kernel_sum
from rdmx.compare.mmd import MMDNystrom
from rdmx.reference.bundle import build_reference


def mixture(n: int, centers: torch.Tensor, weights: torch.Tensor, spread: float, gen: torch.Generator) -> torch.Tensor:
    comp = torch.multinomial(weights, n, replacement=True, generator=gen)
    return centers[comp] + spread * torch.randn(n, centers.shape[1], generator=gen)


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.0005)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() - self.base)


def naive_loss(g, z, alpha, k_rr, sigma):
    """Dense autograd baseline of the same Nystrom MMD^2."""
    gamma = 1.0 / (2 * sigma * sigma)
    rep = torch.exp(-gamma * torch.cdist(g, g).pow(2)).mean()
    att = (torch.exp(-gamma * torch.cdist(g, z).pow(2)) @ alpha).mean()
    return rep - 2 * att + k_rr


def exact_loss(g, bank, sigma, k_rr, block_elems):
    n = g.shape[0]
    rep = kernel_sum(g, None, [sigma], block_elems=block_elems)[0] / (n * n)
    att = kernel_sum(g, bank, [sigma], block_elems=block_elems)[0] / (n * bank.shape[0])
    return rep - 2 * att + k_rr


def measure(fn, g, device, repeats):
    def once():
        x = g.detach().clone().requires_grad_()
        loss = fn(x)
        loss.backward()
        return float(loss.detach())

    value = once()  # warm-up
    times = []
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            once()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--dims", type=int, nargs="+", default=[768, 1536])
    p.add_argument("--landmarks", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--bank-rows", type=int, default=100_000)
    p.add_argument("--kmeans-iters", type=int, default=20)
    p.add_argument("--kmeans-subsample", type=int, default=200_000)
    p.add_argument("--sigma-scale", type=float, default=1.0, help="bandwidth = median heuristic x this")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-max-batch", type=int, default=8192, help="skip the dense baseline above this B")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="CPU grid: B 512 2048, d 768, m 1024, 20k bank, 5 k-means iters")
    args = p.parse_args()
    if args.quick:
        args.batches, args.dims, args.landmarks = [512, 2048], [768], [1024]
        args.bank_rows, args.kmeans_iters, args.kmeans_subsample, args.repeats = 20_000, 5, 20_000, 2
    device = torch.device(args.device)
    if device.type == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # large tensors through mmap, returned on free: RSS then follows live memory
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; sigma x {args.sigma_scale}; bank {args.bank_rows} rows; k-means {args.kmeans_iters} iters on "
          f"{min(args.kmeans_subsample, args.bank_rows)} rows; median of {args.repeats} fwd+bwd")
    header = f"{'B':>6} {'d':>5} {'m':>5} | {'method':<8} {'ms':>9} {'peak MB':>9} {'x naive':>8} | {'attr. rel err':>13} {'build s':>8}"
    print(header)
    print("-" * len(header))
    block_elems = MMDNystromConfig().block_elems
    for d in args.dims:
        gen = torch.Generator().manual_seed(d)
        centers = torch.randn(64, d, generator=gen)
        bank = mixture(args.bank_rows, centers, torch.ones(64), 0.6, gen).to(device)
        for m in args.landmarks:
            request = ReferenceRequest(landmarks=m, kmeans_iters=args.kmeans_iters, kmeans_subsample=args.kmeans_subsample,
                                       krr_subsample=5_000, sigma_subsample=5_000, sigma_scale=args.sigma_scale)

            def chunks():
                for i in range(0, bank.shape[0], 8192):
                    yield bank[i : i + 8192], None

            t0 = time.perf_counter()
            ref = build_reference(chunks, request, encoder_fingerprint="bench", data_fingerprint="bench")
            build_s = time.perf_counter() - t0
            est = MMDNystrom(MMDNystromConfig(landmarks=m, sigma_scale=args.sigma_scale))
            sigma, k_rr = ref.sigma, float(ref.k_rr[0])
            z, alpha = ref.landmarks, ref.alpha[0]
            for b in args.batches:
                g = mixture(b, centers, torch.linspace(0.5, 1.5, 64), 0.7, gen).to(device)
                with torch.no_grad():
                    ny_att = float(est.attraction(g, ref, [0], [sigma])[0])
                    ex_att = float(kernel_sum(g, bank, [sigma], block_elems=block_elems)[0]) / (b * bank.shape[0])
                rel = abs(ny_att - ex_att) / abs(ex_att)
                rows = {"nystrom": lambda x, ref=ref: est.loss(x, ref), "exact": lambda x: exact_loss(x, bank, sigma, k_rr, block_elems)}
                if b <= args.naive_max_batch:
                    rows["naive"] = lambda x: naive_loss(x, z, alpha, k_rr, sigma)
                results = {k: measure(fn, g, device, args.repeats) for k, fn in rows.items()}
                base = results.get("naive", (float("nan"),))[0]
                for k, (t, peak, value) in results.items():
                    print(f"{b:>6} {d:>5} {m:>5} | {k:<8} {t * 1e3:>9.1f} {peak / 2**20:>9.1f} {base / t:>8.2f} | "
                          f"{rel if k == 'nystrom' else float('nan'):>13.2e} {build_s if k == 'nystrom' else float('nan'):>8.1f}")
                if "naive" in results:
                    a, c = results["nystrom"][2], results["naive"][2]
                    assert abs(a - c) <= 1e-4 * max(1e-6, abs(c)) + 1e-6, f"blocked {a} != naive {c}"
                del g
            del ref


if __name__ == "__main__":
    main()
