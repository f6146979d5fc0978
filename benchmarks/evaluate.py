"""Benchmark: SW_rK and FD of rdmx.evaluate against POT and scipy, measured in the same run.

SW_rK: K encoders, each with N generated, N train and N validation rows of dimension d
(precomputed random features; a Gaussian train/val law and a shifted, wider generated law).
  rdmx-f64 / rdmx-f32 : rdmx.evaluate.sliced.sliced_w2_to (train projected and sorted once per
                        chunk, shared by gen and val), projections in float64 / float32
  pot                 : ot.sliced_wasserstein_distance(gen, train) and (val, train) with the same
                        M unit directions (numpy, float64) -- the baseline
The table gives total time, time per encoder, the speed-up over POT and the largest relative
difference of the per-encoder ratios from POT's.
FD of generated and validation rows to train (one evaluation, one encoder), N rows each of every
dimension in --fd-dims: rdmx.evaluate.frechet.frechet_to (float64, eigh; train fitted and its square
root taken once), two frechet_distance calls, and the scipy formula (np.cov + scipy.linalg.sqrtm(C1 C2))
twice -- the baseline.

  python benchmarks/evaluate.py                       # K = 14, N = 16384, M = 1024, d = 1024
  python benchmarks/evaluate.py --quick               # K = 3, N = 4096, M = 256 (seconds on 2 cores)
  python benchmarks/evaluate.py --encoders 2 --pot-encoders 1 --fd-dims 1024 2048
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
import torch
from rich.console import Console
from rich.table import Table
from scipy import linalg

from rdmx.evaluate.frechet import frechet_distance, frechet_to
from rdmx.evaluate.sliced import sliced_w2_to, unit_directions


def features(k: int, n: int, dim: int, seed: int = 0):
    """K encoders' (gen, train, val) float32 feature sets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        scale = np.linspace(0.5, 2.0, dim).astype(np.float32)
        train = rng.standard_normal((n, dim), dtype=np.float32) * scale
        val = rng.standard_normal((n, dim), dtype=np.float32) * scale
        gen = rng.standard_normal((n, dim), dtype=np.float32) * scale * 1.1 + 0.05
        out.append((gen, train, val))
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def bench_sw(sets, directions: int, chunk: int, pot_encoders: int, device: str):
    dim = sets[0][0].shape[1]
    theta = unit_directions(dim, directions, seed=0)
    rows = []
    ratios = {}
    for precision in ("float64", "float32"):
        dtype = torch.float64 if precision == "float64" else torch.float32
        tensors = [tuple(torch.from_numpy(x).to(device, dtype) for x in s) for s in sets]
        if device == "cuda":
            torch.cuda.synchronize()

        def run(tensors=tensors, precision=precision):
            out = []
            for g, t, v in tensors:
                sw_g, sw_v = sliced_w2_to([g, v], t, directions=theta, chunk=chunk, precision=precision)
                out.append(sw_g / sw_v)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        seconds, ratios[precision] = timed(run)
        rows.append((f"rdmx-{precision[-2:]}", device, len(sets), seconds))
    theta_np = theta.numpy()
    pot_sets = [tuple(x.astype(np.float64) for x in s) for s in sets[:pot_encoders]]

    def run_pot():
        out = []
        for g, t, v in pot_sets:
            sw_g = ot.sliced_wasserstein_distance(g, t, projections=theta_np, p=2)
            sw_v = ot.sliced_wasserstein_distance(v, t, projections=theta_np, p=2)
            out.append(sw_g / sw_v)
        return out

    pot_seconds, pot_ratios = timed(run_pot) if pot_encoders else (float("nan"), [])
    rows.append(("pot", "cpu", pot_encoders, pot_seconds))
    return rows, ratios, pot_ratios


def bench_fd(n: int, dims: list[int]):
    """One evaluation's FDs for one encoder: generated and validation rows, each against train."""
    rng = np.random.default_rng(1)
    rows = []
    for dim in dims:
        mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
        t = rng.standard_normal((n, dim)) @ mix
        v = rng.standard_normal((n, dim)) @ mix
        g = rng.standard_normal((n, dim)) @ (mix + 0.1 * rng.standard_normal((dim, dim)) / np.sqrt(dim)) + 0.1

        def scipy_fd(x, y=t):
            c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
            covmean = linalg.sqrtm(c1 @ c2).real
            return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))

        t_scipy, v_scipy = timed(lambda: [scipy_fd(g), scipy_fd(v)])
        t_pairs, v_pairs = timed(lambda: [frechet_distance(g, t), frechet_distance(v, t)])
        t_shared, v_shared = timed(lambda: frechet_to(t, [g, v]))
        diff = max(abs(a / b - 1) for a, b in zip(v_shared + v_pairs, v_scipy + v_scipy, strict=True))
        rows.append((dim, t_scipy, t_pairs, t_shared, diff))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", type=int, default=14, help="K encoders")
    ap.add_argument("--n", type=int, default=16384, help="rows per set")
    ap.add_argument("--directions", type=int, default=1024, help="M unit directions")
    ap.add_argument("--dim", type=int, default=1024, help="feature dimension of every encoder")
    ap.add_argument("--chunk", type=int, default=128, help="directions projected at once")
    ap.add_argument("--pot-encoders", type=int, default=None, help="encoders timed with POT (default: all)")
    ap.add_argument("--fd-dims", type=int, nargs="*", default=[1024, 2048], help="FD dimensions")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (rdmx only; POT runs on CPU)")
    ap.add_argument("--quick", action="store_true", help="K = 3, N = 4096, M = 256, FD dims 256 512")
    args = ap.parse_args()
    if args.quick:
        args.encoders, args.n, args.directions, args.fd_dims = 3, 4096, 256, [256, 512]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pot_encoders = args.encoders if args.pot_encoders is None else min(args.pot_encoders, args.encoders)

    console = Console(width=150)
    console.print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}; "
                  f"K={args.encoders} N={args.n} M={args.directions} d={args.dim} chunk={args.chunk}")
    sets = features(args.encoders, args.n, args.dim)
    rows, ratios, pot_ratios = bench_sw(sets, args.directions, args.chunk, pot_encoders, device)
    pot_per = rows[-1][3] / pot_encoders if pot_encoders else float("nan")
    table = Table(title="SW_rK (per encoder: SW2(gen, train) and SW2(val, train))")
    for col in ("method", "device", "encoders", "total s", "s / encoder", "speed-up vs POT", "max rel diff vs POT"):
        table.add_column(col, justify="right")
    for name, dev, k, seconds in rows:
        per = seconds / k if k else float("nan")
        if name == "pot":
            diff = "-"
        else:
            mine = np.array(ratios["float64" if name.endswith("64") else "float32"][:pot_encoders])
            diff = f"{np.max(np.abs(mine / np.array(pot_ratios) - 1)):.1e}" if pot_encoders else "-"
        table.add_row(name, dev, str(k), f"{seconds:.2f}", f"{per:.2f}", f"{pot_per / per:.2f}x", diff)
    console.print(table)
    console.print(f"SW_rK (rdmx-64) = {np.mean(ratios['float64']):.4f}")

    if args.fd_dims:
        fd = Table(title=f"Frechet distance of generated and validation rows to train, N = {args.n} each")
        for col in ("dim", "scipy s", "2 × frechet_distance s", "frechet_to s", "speed-up vs scipy",
                    "max rel diff vs scipy"):
            fd.add_column(col, justify="right")
        for dim, t_scipy, t_pairs, t_shared, diff in bench_fd(args.n, args.fd_dims):
            fd.add_row(str(dim), f"{t_scipy:.2f}", f"{t_pairs:.2f}", f"{t_shared:.2f}", f"{t_scipy / t_shared:.2f}x",
                       f"{diff:.1e}")
        console.print(fd)
        console.print("frechet_to (what an evaluation runs) fits train and takes its square root once for both sets")

if __name__ == "__main__":
    main()
