"""Benchmark: what the data pipeline costs in `rdmx reference build`.

A synthetic JPEG folder (made here) is encoded by a battery in three ways, measured in the
same run:
  forward only        : the battery on images already decoded and in memory (the baseline)
  extract, workers=0  : rdmx's resumable sharded extraction, decoding in the main process
  extract, workers=W  : the same with W DataLoader workers decoding
Images/s for each and the share of the forward-only rate the pipeline keeps.

  python benchmarks/reference_build.py [--images 512] [--size 64] [--workers 2]
      [--encoders toy-conv,pixels] [--source-size 96]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from rdmx.data.folder import image_folder  # noqa: E402
from rdmx.plugins import get_plugins  # noqa: E402
from rdmx.reference.extract import extract_features  # noqa: E402


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for c in range(4):
        (root / f"class{c}").mkdir(parents=True)
    for i in range(n):
        arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"class{i % 4}" / f"{i:06d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=64, help="dataset image size (ADM centre crop)")
    ap.add_argument("--source-size", type=int, default=96, help="side of the JPEGs written")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--encoders", default="toy-conv,pixels", help="comma-separated registered encoders")
    ap.add_argument("--encoder-options", default='{"toy-conv": {"channels": 3, "resolution": 64}, "pixels": {"channels": 3}}')
    args = ap.parse_args()
    import json

    options = json.loads(args.encoder_options)
    reg = get_plugins().registry("encoders")
    encoders = {name: reg.get(name).build(options.get(name, {})) for name in args.encoders.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        make_folder(root, args.images, args.source_size)
        data = image_folder(root, size=args.size, val_fraction=0.0)
        images = torch.stack([data.train[i][0] for i in range(len(data.train))])
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(0, len(images), args.batch):
                for enc in encoders.values():
                    enc(images[s : s + args.batch])
        rows.append(("forward only (decoded in memory)", len(images) / (time.perf_counter() - t0)))
        for workers in (0, args.workers):
            cache = Path(tmp) / f"cache-{workers}"
            t0 = time.perf_counter()
            extract_features(encoders, data.train, cache_dir=cache, data_fingerprint=data.fingerprint(), split="train",
                             batch_size=args.batch, num_workers=workers, progress=False)
            rows.append((f"rdmx extraction, workers={workers}", len(images) / (time.perf_counter() - t0)))
    base = rows[0][1]
    print(f"{args.images} JPEGs {args.source_size}px → {args.size}px; battery: {', '.join(encoders)}; "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'pipeline':<36} {'images/s':>9} {'× forward-only':>15}")
    for name, rate in rows:
        print(f"{name:<36} {rate:>9.1f} {rate / base:>15.2f}")


if __name__ == "__main__":
    main()
