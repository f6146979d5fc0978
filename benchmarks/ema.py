"""What the generator's EMA and its export cost at pMF-H size on this machine, and how close EDM2's
post-hoc reconstruction comes to an EMA tracked directly.

* EMA update: ``GeneratorEMA.update`` (``torch._foreach_lerp_`` over the float32 parameters) for one
  EMA, and for one EMA plus two post-hoc profiles; median of 5; its memory in bytes per parameter.
  Beside it, pMF-H's forward + backward for one 256² image (bf16 autocast, as it trains) measured in
  the same run, and what the generator alone costs in a step of the paper's ImageNet run (N = 5120):
  the EMA's share of a step is at most its time over that.
* Export: reading the weights from a sealed checkpoint, then writing the ``safetensors`` export and
  the release's ``.pth``: seconds and bytes.
* Post-hoc: σ_rel 0.05 and 0.10 snapshotted every K steps along a 256-step random-walk trajectory
  (float64) rebuild σ_rel 0.07; the error against the directly tracked profile, relative to the
  average's size, and the step mass the reconstruction misplaces.

    python benchmarks/ema.py            # pmf-h
    python benchmarks/ema.py --preset pmf-b
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

GiB = 2**30


class _Cfg:
    def __init__(self, posthoc=(), decay=0.999):
        self.posthoc, self.decay, self.half_life_images = list(posthoc), decay, 0.0
        self.update_every, self.rampup, self.warmup_steps = 1, 0.0, 0


def timed(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(preset: str):
    from rdmx.plugins import get_plugins
    from rdmx.train.generator import DataInfo

    entry = get_plugins().get("generators", preset)
    torch.manual_seed(0)
    return entry.build(entry.config(weights="random", zero_init=False), DataInfo((3, 256, 256), 1000))


def ema_costs(gen) -> dict:
    from rdmx.train.ema import GeneratorEMA

    params = sum(p.numel() for p in gen.parameters() if p.requires_grad)
    out = {"params": params}
    ema = GeneratorEMA(gen, _Cfg(), 5120)
    step = [0]

    def update():
        step[0] += 1
        ema.update(step[0])

    out["ema_s"] = timed(update)
    out["bytes_per_param"] = sum(a.numel() * a.element_size() for a in ema.averages["ema"]) / params
    del ema
    three = GeneratorEMA(gen, _Cfg(posthoc=(0.05, 0.10)), 5120)

    def update_three():
        step[0] += 1
        three.update(step[0])

    out["ema_posthoc_s"] = timed(update_three)
    del three
    noise = torch.randn(1, 3, 256, 256)
    cond = torch.zeros(1, dtype=torch.long)

    def fwd_bwd():
        gen.zero_grad(set_to_none=True)
        gen(noise, cond).sum().backward()

    out["fwd_bwd_s"] = timed(fwd_bwd, repeats=1)
    gen.zero_grad(set_to_none=True)
    return out


def export_costs(gen, preset: str) -> dict:
    from types import SimpleNamespace

    from rdmx.export import Export, write_safetensors
    from rdmx.train.checkpoint import open_checkpoint
    from rdmx.train.checkpointer import Checkpointer
    from rdmx.train.distributed import DistContext
    from rdmx_pmf.export import release_pth

    out = {}
    with tempfile.TemporaryDirectory(prefix="rdmx-ema-bench-") as tmp:
        tmp = Path(tmp)
        folder = Checkpointer(tmp / "checkpoints", DistContext(), log=lambda m: None).save(
            1, {"generator": gen.state_dict()}, {"fingerprint": "bench"}, block=True)
        t0 = time.perf_counter()
        ckpt = open_checkpoint(folder)
        ckpt.load_generator(gen, "raw")
        out["read_s"] = time.perf_counter() - t0
        export = Export(resolved=SimpleNamespace(fingerprint="bench"), checkpoint=ckpt, weights="raw", fmt="safetensors",
                        info={"generator": preset})
        for name, write in (("safetensors", lambda d: write_safetensors(gen, d, export)),
                            ("release", lambda d: release_pth(gen, None, d, export))):
            target = tmp / name
            target.mkdir()
            t0 = time.perf_counter()
            write(target)
            out[f"{name}_s"] = time.perf_counter() - t0
            out[f"{name}_bytes"] = sum(p.stat().st_size for p in target.iterdir())
    return out


def posthoc_errors() -> list[tuple[int, float, float]]:
    from rdmx.train.ema import profile_residual, sigma_rel_to_gamma, solve_posthoc, step_masses

    rng = np.random.default_rng(0)
    traj = np.cumsum(rng.normal(size=(256, 64)), axis=0)
    target = (sigma_rel_to_gamma(0.07), 256)
    direct = step_masses(*target, 256) @ traj
    rows = []
    for every in (1, 4, 16, 64):
        snaps = [(sigma_rel_to_gamma(s), t) for t in range(every, 257, every) for s in (0.05, 0.10)]
        x = solve_posthoc(snaps, target)
        got = sum(xi * (step_masses(g, t, 256) @ traj) for xi, (g, t) in zip(x, snaps))
        rows.append((every, float(np.abs(got - direct).max() / np.abs(direct).max()), profile_residual(snaps, target, x)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="pmf-h")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    gen = build(args.preset)
    e = ema_costs(gen)
    x = export_costs(gen, args.preset)
    n = 5120
    print(f"{args.preset}: {e['params'] / 1e9:.3f} B trainable parameters; {torch.get_num_threads()} CPU threads")
    print(f"EMA update: {e['ema_s'] * 1e3:.0f} ms (one EMA), {e['ema_posthoc_s'] * 1e3:.0f} ms (EMA + 2 post-hoc "
          f"profiles); memory {e['bytes_per_param']:.0f} bytes per parameter per average "
          f"({e['params'] * e['bytes_per_param'] / GiB:.2f} GiB)")
    print(f"{args.preset} forward + backward, one 256² image: {e['fwd_bwd_s']:.2f} s, so the generator alone takes "
          f"≈ {e['fwd_bwd_s'] * n / 3600:.1f} h of a step at N = {n} here: the EMA is "
          f"{100 * e['ema_s'] / (e['fwd_bwd_s'] * n):.4f} % of it (at most; the encoders come on top)")
    print(f"export: read from a sealed checkpoint {x['read_s']:.1f} s; safetensors {x['safetensors_s']:.1f} s, "
          f"{x['safetensors_bytes'] / GiB:.2f} GiB; release .pth {x['release_s']:.1f} s, "
          f"{x['release_bytes'] / GiB:.2f} GiB")
    print("post-hoc σ_rel 0.07 from 0.05 and 0.10 (256 steps, float64): snapshot every K steps -> max error / max "
          "|average|, misplaced step mass")
    for every, err, mass in posthoc_errors():
        print(f"  K = {every:3d}: {err:.2e}   {mass:.2e}")


if __name__ == "__main__":
    main()
