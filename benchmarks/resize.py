"""Benchmark: the FID Inception's TF-1 bilinear resize (rdmx.represent.resize) against torch's
antialiased bicubic F.interpolate (the resize it replaced), 256 → 299, forward + backward to the
input, measured in the same run; and the relative L2 difference of the two 299-px inputs.

  python benchmarks/resize.py [--batch 64] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from rdmx.represent.resize import resize_bilinear_tf1


def timed(fn, x, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        x.grad = None
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(x).square().sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    x = torch.rand(a.batch, 3, 256, 256, device=a.device, requires_grad=True)
    tf1 = lambda t: resize_bilinear_tf1(t, (299, 299))  # noqa: E731
    bicubic = lambda t: F.interpolate(t, size=(299, 299), mode="bicubic", antialias=True)  # noqa: E731
    base = timed(bicubic, x, a.repeats)
    new = timed(tf1, x, a.repeats)
    with torch.no_grad():
        rel = float((tf1(x) - bicubic(x)).norm() / tf1(x).norm())
    print(f"| resize 256→299, batch {a.batch}, fwd+bwd ({a.device}) | ms | × baseline |")
    print("|---|---|---|")
    print(f"| bicubic + antialias (baseline, F.interpolate) | {base:.1f} | 1.00 |")
    print(f"| TF-1 bilinear (rdmx.represent.resize) | {new:.1f} | {new / base:.2f} |")
    print(f"\nrelative L2 difference of the two 299-px inputs: {rel:.4f}")


if __name__ == "__main__":
    main()
