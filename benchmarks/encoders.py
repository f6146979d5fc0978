"""Encoder throughput: forward and forward+backward-to-input images/s and achieved TFLOP/s.

Each encoder runs in its preset precision with random weights (real size unless --tiny), on
CUDA when available. FLOPs are counted with torch's FlopCounterMode on the same call. The
baseline, measured in the same run and precision, is a dense square matmul: "util" is the
encoder's achieved TFLOP/s over that matmul's.

    python benchmarks/encoders.py --encoders inception,convnext,dinov2 --batch 4
    python benchmarks/encoders.py --tiny                  # every registered image encoder, tiny
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from timing import count_flops, matmul_tflops, timed  # noqa: E402 - benchmarks/timing.py

from rdmx.errors import RdmxError  # noqa: E402
from rdmx.plugins import get_plugins  # noqa: E402

PANEL = ["inception", "convnext", "mae", "clip", "dinov3", "pe-core", "siglip2", "aimv2", "webssl", "dreamsim",
         "dinov2", "siglip", "radio", "flux-vae"]


def bench(name: str, args, device: torch.device, baselines: dict) -> dict:
    entry = get_plugins().get("encoders", name)
    cfg = {"weights": "random", "tiny": args.tiny}
    if name == "radio":
        cfg["trust_remote_code"] = True
    enc = entry.build(cfg).to(device)
    if enc.spec.channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    res = enc.spec.resolution
    x = torch.rand(args.batch, 3, res, res, device=device)

    def fwd():
        with torch.no_grad():
            enc(x)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        enc(xi).square().sum().backward()

    f_fwd, f_bwd = count_flops(fwd, device), count_flops(fwd_bwd, device)
    t_fwd = timed(fwd, device, args.iters, args.warmup)
    t_bwd = timed(fwd_bwd, device, args.iters, args.warmup)
    if enc.spec.dtype not in baselines:
        baselines[enc.spec.dtype] = matmul_tflops(enc.spec.dtype, device, args.matmul, args.iters + 2)
    peak = baselines[enc.spec.dtype]
    row = {
        "encoder": name, "dtype": enc.spec.dtype, "res": res, "dim": enc.dim,
        "params_M": sum(p.numel() for p in enc.parameters()) / 1e6,
        "fwd_img_s": args.batch / t_fwd, "fwd_tflops": f_fwd / t_fwd / 1e12,
        "bwd_img_s": args.batch / t_bwd, "bwd_tflops": f_bwd / t_bwd / 1e12,
        "gflop_img": f_fwd / args.batch / 1e9,
    }
    row["fwd_util"] = row["fwd_tflops"] / peak
    row["bwd_util"] = row["bwd_tflops"] / peak
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", default=",".join(PANEL), help="comma-separated encoder names")
    p.add_argument("--batch", type=int, default=None, help="images per call (default: 64 CUDA, 2 CPU)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="tiny models of each family (smoke run)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--matmul", type=int, default=None, help="baseline matmul size")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    args.batch = args.batch or (64 if cuda else 2)
    args.iters = args.iters or (10 if cuda else 2)
    args.matmul = args.matmul or (8192 if cuda else 1024)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; batch {args.batch}; {'tiny' if args.tiny else 'real-size'} random weights; "
          f"torch {torch.__version__}")
    baselines: dict[str, float] = {}
    rows, skipped = [], []
    for n in [s.strip() for s in args.encoders.split(",") if s.strip()]:
        try:
            rows.append(bench(n, args, device, baselines))
        except RdmxError as exc:
            skipped.append((n, str(exc).split(";")[0]))
        if cuda:
            torch.cuda.empty_cache()
    hdr = (f"{'encoder':<11}{'dtype':>9}{'res':>5}{'dim':>6}{'Mparam':>8}{'GFLOP/img':>10}"
           f"{'fwd img/s':>11}{'fwd TF/s':>9}{'util':>6}{'f+b img/s':>11}{'f+b TF/s':>9}{'util':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['encoder']:<11}{r['dtype']:>9}{r['res']:>5}{r['dim']:>6}{r['params_M']:>8.0f}{r['gflop_img']:>10.1f}"
              f"{r['fwd_img_s']:>11.2f}{r['fwd_tflops']:>9.3f}{r['fwd_util']:>6.2f}"
              f"{r['bwd_img_s']:>11.2f}{r['bwd_tflops']:>9.3f}{r['bwd_util']:>6.2f}")
    for dt, tf in baselines.items():
        print(f"baseline matmul {args.matmul}^2 {dt}: {tf:.3f} TFLOP/s (util = encoder TF/s / this)")
    for n, why in skipped:
        print(f"skipped {n}: {why}")


if __name__ == "__main__":
    main()
