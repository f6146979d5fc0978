"""pMF generator throughput: the one-step sampler's forward and forward+backward images/s.

Each size is built with random weights (``zero_init = false``, so every weight is in the graph)
at 256² with 1000 classes, and timed in both precisions: bf16 autocast (the recipe's) and
float32. "f+b" is the gradient-caching phase 3 of one chunk: the sampler with grad, then the
backward of Σ x·g into every parameter. FLOPs are counted with torch's FlopCounterMode on the
same call. Baseline, measured in the same run and precision: a dense square matmul; "util" is
the generator's achieved TFLOP/s over it. On CUDA the peak memory of f+b is reported too.

    python benchmarks/generator.py                              # CPU: tiny and pmf-b, batch 2
    python benchmarks/generator.py --sizes pmf-b,pmf-l,pmf-h --batch 8 --iters 5   # a GPU
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from timing import count_flops, matmul_tflops, timed  # noqa: E402 - benchmarks/timing.py

from rdmx.plugins import get_plugins  # noqa: E402
from rdmx.train.generator import DataInfo  # noqa: E402


def build(size: str, device: torch.device, resolution: int, classes: int):
    name, tiny = ("pmf-h", True) if size == "tiny" else (size, False)
    cfg = {"weights": "random", "tiny": tiny, "zero_init": False}
    gen = get_plugins().get("generators", name).build(cfg, DataInfo((3, resolution, resolution), classes))
    return gen.to(device)


def bench(size: str, autocast: str, args, device: torch.device) -> dict:
    gen = build(size, device, args.resolution, args.classes)
    gen.config.autocast = autocast
    g = torch.Generator().manual_seed(0)
    z = gen.sample_noise(args.batch, g, device)
    y = gen.sample_conditions(args.batch, g, device)
    weight = torch.randn(z.shape, generator=g).to(device)

    def fwd():
        with torch.no_grad():
            gen(z, y)

    def fwd_bwd():
        (gen(z, y) * weight).sum().backward()

    flops_f, flops_b = count_flops(fwd, device), count_flops(fwd_bwd, device)
    t_f = timed(fwd, device, args.iters, args.warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_b = timed(fwd_bwd, device, args.iters, args.warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    n_params = sum(p.numel() for p in gen.parameters())
    return {"size": size, "precision": "bf16" if autocast == "bf16" else "float32", "mparams": n_params / 1e6,
            "gflop": flops_f / args.batch / 1e9, "fwd": args.batch / t_f, "fwd_tf": flops_f / t_f / 1e12,
            "fb": args.batch / t_b, "fb_tf": flops_b / t_b / 1e12, "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,pmf-b", help="comma list of: tiny, pmf-b, pmf-l, pmf-h")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--matmul", type=int, default=1024, help="side of the baseline matmul")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {where}; batch {args.batch}; {args.resolution}² × 3, {args.classes} classes; random weights; "
          f"torch {torch.__version__}")
    base = {p: matmul_tflops(dt, device, args.matmul, 5) for p, dt in (("bf16", torch.bfloat16), ("float32", torch.float32))}
    head = (f"{'size':<7}{'precision':>10}{'Mparam':>8}{'GFLOP/img':>10}{'fwd img/s':>11}{'fwd TF/s':>9}{'util':>6}"
            f"{'f+b img/s':>11}{'f+b TF/s':>9}{'util':>6}{'peak MiB':>10}")
    print(head)
    print("-" * len(head))
    for size in args.sizes.split(","):
        for autocast in ("bf16", "off"):
            r = bench(size.strip(), autocast, args, device)
            b = base[r["precision"]]
            print(f"{r['size']:<7}{r['precision']:>10}{r['mparams']:>8.1f}{r['gflop']:>10.1f}{r['fwd']:>11.2f}"
                  f"{r['fwd_tf']:>9.3f}{r['fwd_tf'] / b:>6.2f}{r['fb']:>11.2f}{r['fb_tf']:>9.3f}{r['fb_tf'] / b:>6.2f}"
                  f"{r['peak']:>10.0f}")
    for p, v in base.items():
        print(f"baseline matmul {args.matmul}^2 {p}: {v:.3f} TFLOP/s (util = generator TF/s / this)")


if __name__ == "__main__":
    main()
