"""Benchmark: one gradient-cached training step of the flux2-klein generator (random weights).

For each micro-chunk size, in a fresh process:
  generate : forward only, no grad (sampling throughput: the baseline of the same run)
  step     : the gradient-cached step of rdmx.train.gradcache (no-grad pass over all chunks, loss
             on all features, then every chunk again with grad through the VAE decoder and the
             transformer), with and without per-block activation checkpointing
Images/s and peak memory (CUDA: max allocated; CPU: peak RSS growth). The encoders are real-size
presets with random weights (``--encoders``); the loss is a fixed quadratic of the features, so
the step's cost is the generator's and the encoders', not the estimator's.

  python benchmarks/flux2_step.py --device cuda --micro 1 2 4 8 --batch 32      # real size (GPU)
  python benchmarks/flux2_step.py --tiny --device cpu --micro 2 4 --batch 8     # tiny classes (CPU smoke)
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gradcache import PeakRSS  # noqa: E402  (one peak-memory sampler for the CPU benchmarks)

PROMPTS = [f"a photo of object number {i} on a table" for i in range(64)]


def build(args, checkpoint: bool):
    from rdmx.plugins import get_plugins
    from rdmx.testing import tiny_tokenizer
    from rdmx.train.generator import DataInfo

    plugins = get_plugins()
    tmp = Path(tempfile.mkdtemp(prefix="flux2-bench-"))
    chat = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
    tok = tiny_tokenizer(tmp / "tok", PROMPTS, chat_template=chat)
    cfg = {"weights": "random", "tiny": args.tiny, "resolution": 64 if args.tiny else args.resolution,
           "ctx_len": 12 if args.tiny else 48, "tokenizer": str(tok), "cache_dir": str(tmp / "cache"),
           "checkpoint_blocks": checkpoint, "text_device": args.device}
    gen = plugins.get("generators", "flux2-klein").build(cfg, DataInfo((3, 64, 64), prompts=tuple(PROMPTS)))
    gen = gen.to(args.device)
    encoders = {}
    for name in args.encoders.split(","):
        enc = plugins.get("encoders", name).build({"weights": "random", "tiny": args.tiny})
        encoders[name] = enc.to(args.device)
    return gen, encoders


def measure(args, micro: int, mode: str) -> dict:
    from rdmx.train.gradcache import cached_backward

    device = torch.device(args.device)
    gen, encoders = build(args, checkpoint=mode == "step+ckpt")
    g = torch.Generator().manual_seed(0)
    noise = gen.sample_noise(args.batch, g, device)
    cond = gen.sample_conditions(args.batch, g, device)

    def loss_fn(feats, _cond):
        raws = {k: f.square().mean() for k, f in feats.items()}
        return sum(raws.values()), raws

    def run():
        if mode == "generate":
            with torch.no_grad():
                for s in range(0, args.batch, micro):
                    gen(noise[s : s + micro], cond[s : s + micro])
        else:
            gen.zero_grad(set_to_none=True)
            cached_backward(gen, encoders, noise, cond, loss_fn, micro)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with PeakRSS() as rss:
        for _ in range(args.repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss.mib
    best = min(times)
    return {"micro": micro, "mode": mode, "s": best, "images_per_s": args.batch / best, "peak_mib": peak,
            "params": sum(p.numel() for p in gen.transformer.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny random models of the same classes")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--micro", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--batch", type=int, default=16, help="generated images per measured step")
    ap.add_argument("--encoders", default="inception,dinov2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        micro, mode = args.one.split(":")
        print(json.dumps(measure(args, int(micro), mode)))
        return
    rows = []
    for micro in args.micro:
        for mode in ("generate", "step", "step+ckpt"):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--one", f"{micro}:{mode}"]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if out.returncode:
                rows.append({"micro": micro, "mode": mode, "error": out.stderr.strip().splitlines()[-1]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    params = next((r["params"] for r in rows if "params" in r), 0)
    lines = [f"device {args.device}, flux2-klein {'tiny' if args.tiny else 'klein-4B'} ({params:,} transformer "
             f"params), random weights, encoders {args.encoders}, {args.batch} images per step",
             f"{'micro':>6} {'mode':>10} {'img/s':>9} {'peak MiB':>10} {'× generate':>11}"]
    base = {r["micro"]: r["images_per_s"] for r in rows if r.get("mode") == "generate" and "images_per_s" in r}
    for r in rows:
        if "error" in r:
            lines.append(f"{r['micro']:>6} {r['mode']:>10}  error: {r['error']}")
            continue
        rel = r["images_per_s"] / base[r["micro"]] if r["micro"] in base else float("nan")
        lines.append(f"{r['micro']:>6} {r['mode']:>10} {r['images_per_s']:>9.2f} {r['peak_mib']:>10.0f} {rel:>11.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
