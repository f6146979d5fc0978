"""What a recipe's gradient-cached step holds in memory at real size, projected per chunk from exact
counts on the CPU, and the largest chunk that fits a memory budget (issue 8: 70 GiB on one GPU).

With the loss gradient cached at the image, phase 3 keeps the generator's graph of one chunk and
one encoder's graph at a time, so the step's peak is

    static + generator(c) + max over training encoders e of encoder_e(c)

* static: every encoder's weights in the dtype the recipe holds them in, and the generator's float32
  weights, gradients and AdamW moments (16 bytes per parameter);
* generator(c), encoder_e(c): the bytes autograd saves for backward (``SavedTensorMeter``, exact)
  for a chunk of c images, as the line through chunks of 1 and 2 images, computed in each
  component's own precision (bf16 autocast on the CPU as on CUDA). The intercept is what does not
  grow with c: autocast's bf16 copies of float32 weights.

Not counted: the allocator's rounding and fragmentation, cuBLAS / cuDNN workspaces, transients of
one backward op, and CUDA kernels that save other tensors than the CPU's (attention saves its output
and log-sum-exp on both). So this is a floor to compare with the GPU's measured peak
(benchmarks/step.py), not a replacement for it.

    python benchmarks/step_memory.py                                   # the panel, pMF-H and the stand-in
    python benchmarks/step_memory.py recipes/irdm_imagenet.toml --weights-dtype bfloat16 --activation-checkpointing
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from step_flops import data_info_of, plain, random_weights, recipe_parser  # noqa: E402 - benchmarks/step_flops.py

from rdmx.errors import RdmxError  # noqa: E402
from rdmx.plugins import get_plugins  # noqa: E402
from rdmx.recipe import load_recipe  # noqa: E402
from rdmx.train import shard  # noqa: E402
from rdmx.train.build import hold_weights  # noqa: E402
from rdmx.train.memory import SavedTensorMeter  # noqa: E402

GiB = 2**30
ADAMW_BYTES_PER_PARAM = 16  # float32 weight, gradient and two moments


def saved_line(step) -> tuple[int, int]:
    """(fixed, per-image) saved-for-backward bytes of ``step(batch)``: the line through batches 1 and 2."""
    peaks = []
    for batch in (1, 2):
        with SavedTensorMeter() as meter:
            step(batch)
        peaks.append(meter.peak)
    per = peaks[1] - peaks[0]
    return peaks[0] - per, per


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def encoder_memory(name: str, config: dict, own_dtype, battery_dtype: str, shape) -> dict:
    entry = get_plugins().get("encoders", name)
    enc = hold_weights(entry.build(random_weights(entry, config)), own_dtype, battery_dtype, name)
    g = torch.Generator().manual_seed(0)

    def step(batch: int) -> None:
        x = torch.rand(batch, *shape, generator=g, requires_grad=True)
        enc(x).sum().backward()

    fixed, per = saved_line(step)
    return {"weights": tensor_bytes(enc), "fixed": fixed, "per_image": per, "dtype": enc.spec.weights_dtype}


def generator_memory(name: str, config: dict, info, recompute: bool = False) -> dict:
    entry = get_plugins().get("generators", name)
    gen = entry.build(random_weights(entry, config), info)
    if recompute:  # train.activation_checkpointing, as the trainer applies it
        shard.checkpoint_units(shard.shard_units(gen) or [gen])
    g = torch.Generator().manual_seed(0)

    def step(batch: int) -> None:
        gen.zero_grad(set_to_none=True)
        gen(gen.sample_noise(batch, g), gen.sample_conditions(batch, g)).sum().backward()

    fixed, per = saved_line(step)
    params = sum(p.numel() for p in gen.parameters() if p.requires_grad)
    return {"params": params, "static": ADAMW_BYTES_PER_PARAM * params + tensor_bytes(gen) - 4 * params,
            "fixed": fixed, "per_image": per}


def recipe_memory(path: Path, classes: int, overrides: list[str]) -> dict:
    resolved = load_recipe(path, overrides)
    r = resolved.recipe
    info, data_note = data_info_of(resolved, classes)
    encoders = {}
    for i, block in enumerate(r.battery.encoders):
        if block.role != "train":
            continue
        config = plain(resolved.config(f"battery.encoders[{i}]"))
        encoders[block.key()] = encoder_memory(block.name, config, block.weights_dtype, r.battery.weights_dtype,
                                               info.sample_shape)
    gen = generator_memory(r.generator.name, plain(resolved.config("generator")), info,
                           r.train.activation_checkpointing)
    return {"recipe": path.name, "generator": r.generator.name, "gen": gen, "encoders": encoders,
            "data": data_note, "batch": r.train.batch, "recompute": r.train.activation_checkpointing,
            "weights_dtype": r.battery.weights_dtype}


def peak(m: dict, chunk: int) -> tuple[float, str]:
    """Projected peak bytes of phase 3 at ``chunk`` and the encoder that sets it."""
    g = m["gen"]
    static = g["static"] + sum(e["weights"] for e in m["encoders"].values())
    name, worst = max(((k, e["fixed"] + chunk * e["per_image"]) for k, e in m["encoders"].items()),
                      key=lambda kv: kv[1])
    return static + g["fixed"] + chunk * g["per_image"] + worst, name


def report(m: dict, chunks: list[int], budget_gib: float) -> None:
    g = m["gen"]
    print(f"{m['recipe']}: generator {m['generator']} ({g['params'] / 1e6:.0f} M params; {m['data']}); "
          f"battery.weights_dtype = {m['weights_dtype']}, train.activation_checkpointing = "
          f"{str(m['recompute']).lower()}")
    print(f"  {'component':<12}{'weights GiB':>12}{'saved fixed MiB':>16}{'saved MiB/img':>14}")
    print(f"  {'generator':<12}{g['static'] / GiB:>12.2f}{g['fixed'] / 2**20:>16.0f}{g['per_image'] / 2**20:>14.1f}"
          f"   (weights, grads, AdamW: 16 B/param)")
    for k, e in m["encoders"].items():
        print(f"  {k:<12}{e['weights'] / GiB:>12.2f}{e['fixed'] / 2**20:>16.0f}{e['per_image'] / 2**20:>14.1f}"
              f"   ({e['dtype']} weights)")
    fits = None
    for c in chunks:
        total, who = peak(m, c)
        fits = c if total <= budget_gib * GiB else fits
        print(f"  chunk {c:>4}: {total / GiB:6.1f} GiB projected (largest encoder graph: {who})")
    n = m["batch"]
    print(f"  largest chunk listed within {budget_gib:g} GiB: {fits if fits else 'none'}"
          + (f" (N = {n}: {n // fits} chunks per step on one GPU)" if fits else ""))
    print()


def main() -> None:
    ap = recipe_parser(__doc__)
    ap.add_argument("--weights-dtype", choices=["float32", "bfloat16"], default=None,
                    help="battery.weights_dtype (default: the recipe's)")
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="train.activation_checkpointing = true (the generator's blocks recomputed in backward)")
    ap.add_argument("--budget-gib", type=float, default=70.0)
    ap.add_argument("--chunks", type=int, nargs="*", default=[8, 16, 32, 64, 128])
    args = ap.parse_args()
    overrides = [f"battery.weights_dtype={args.weights_dtype}"] if args.weights_dtype else []
    overrides += ["train.activation_checkpointing=true"] if args.activation_checkpointing else []
    print(f"saved-for-backward bytes counted on the CPU (torch {torch.__version__}), real sizes, random weights")
    for path in args.recipes:
        try:
            report(recipe_memory(path, args.classes, overrides), args.chunks, args.budget_gib)
        except RdmxError as exc:
            print(f"{path.name}: not measured here: {exc}")


if __name__ == "__main__":
    main()
