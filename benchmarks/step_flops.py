"""What a recipe's gradient-cached step costs per generated image, counted exactly at real size,
and the share of a GPU's bf16 peak that a throughput target therefore demands.

Nothing runs and no weights are needed: every encoder of the recipe's battery and its generator
are built on the meta device (random-weight configs; a family whose constructor reads tensor
values is built on the CPU and moved there) and torch's FlopCounterMode counts one image:

* encoder forward (phase 1, no grad) and forward + backward into the image only (phase 3:
  frozen weights get no gradient, so the backward costs about one forward);
* generator forward (phase 1) and forward + backward into its parameters (phase 3);
* per generated image: generator fwd + fwd&bwd + Σ_training encoders (fwd + fwd&bwd); the loss
  is O(N²·d) on features and measured by benchmarks/step.py (under 0.1 % of a step);
* per evaluation sample: generator fwd + Σ_all encoders fwd.

The demanded utilisation is target images/s × FLOP per image over the card's dense bf16 peak
(NVIDIA's datasheet: 989 TFLOP/s for the H100 SXM and the H200).

    python benchmarks/step_flops.py                      # the panel (stand-in) and ImageNet (pMF-H) recipes
    python benchmarks/step_flops.py recipes/irdm_imagenet.toml --target 35
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from timing import count_flops  # noqa: E402 - benchmarks/timing.py

from rdmx.errors import RdmxError  # noqa: E402
from rdmx.plugins import get_plugins  # noqa: E402
from rdmx.recipe import load_recipe  # noqa: E402
from rdmx.train.build import _build, data_info  # noqa: E402
from rdmx.train.generator import DataInfo  # noqa: E402

PEAK_BF16_TFLOPS = {"H100 SXM": 989.4, "H200": 989.4}  # dense, NVIDIA's datasheets
TARGETS = {"irdm_panel.toml": 37.2, "irdm_imagenet.toml": 35.0}  # issue 8: images/s on one H100/H200
META = torch.device("meta")


def on_meta(build):
    """``build()`` on the meta device; on the CPU then moved, for constructors that read values."""
    try:
        with META:
            return build()
    except (RuntimeError, NotImplementedError):
        return build().to(META)


@contextlib.contextmanager
def autocast_off_on_meta():
    """torch.autocast refuses the meta device: make it a no-op there (precision does not change
    FLOP counts); every other device keeps the real one."""
    real = torch.autocast

    def autocast(device_type, *args, **kwargs):
        return contextlib.nullcontext() if device_type == "meta" else real(device_type, *args, **kwargs)

    torch.autocast = autocast
    try:
        yield
    finally:
        torch.autocast = real


def random_weights(entry, config: dict) -> dict:
    fields = entry.config.model_fields
    return {**config, **({"weights": "random"} if "weights" in fields else {}),
            **({"zero_init": False} if "zero_init" in fields else {})}  # pMF: every weight in the graph


def encoder_flops(name: str, config: dict, shape: tuple[int, ...]) -> dict:
    entry = get_plugins().get("encoders", name)
    enc = on_meta(lambda: entry.build(random_weights(entry, config)))
    x = torch.empty(1, *shape, device=META)
    with autocast_off_on_meta():
        fwd = count_flops(lambda: torch.no_grad()(enc)(x))
        xg = x.clone().requires_grad_(True)
        fwd_bwd = count_flops(lambda: enc(xg).sum().backward())
    return {"fwd": fwd, "fwd_bwd": fwd_bwd, "params": sum(p.numel() for p in enc.parameters()),
            "resolution": enc.spec.resolution}


def generator_flops(name: str, config: dict, info: DataInfo) -> dict:
    entry = get_plugins().get("generators", name)
    gen = on_meta(lambda: entry.build(random_weights(entry, config), info))
    g = torch.Generator().manual_seed(0)
    z = gen.sample_noise(1, g, "cpu").to(META)
    y = gen.sample_conditions(1, g, "cpu")
    y = y.to(META) if torch.is_tensor(y) else y
    with autocast_off_on_meta():
        fwd = count_flops(lambda: torch.no_grad()(gen)(z, y))
        fwd_bwd = count_flops(lambda: gen(z, y).sum().backward())
    return {"fwd": fwd, "fwd_bwd": fwd_bwd, "params": sum(p.numel() for p in gen.parameters())}


def data_info_of(resolved, classes: int) -> tuple[DataInfo, str]:
    """The recipe's data as its generator sees it; without the data (an absent image folder), an
    RGB image of ``data.size`` px with ``classes`` classes."""
    try:
        return data_info(_build(get_plugins(), "datasets", "data", resolved.recipe.data.name, resolved)), "its data"
    except Exception:  # noqa: BLE001 - the folder is not on this machine: the shape is all that counts
        size = getattr(resolved.config("data"), "size", 256)
        return DataInfo((3, size, size), classes), f"data absent: 3 × {size}² assumed, {classes} classes"


def plain(config) -> dict:
    return config.model_dump() if hasattr(config, "model_dump") else dict(config)


def recipe_costs(path: Path, classes: int, cache: dict) -> dict:
    resolved = load_recipe(path)
    r = resolved.recipe
    info, data_note = data_info_of(resolved, classes)
    encoders, skipped = {}, []
    for i, block in enumerate(r.battery.encoders):
        config = plain(resolved.config(f"battery.encoders[{i}]"))
        key = (block.name, repr(sorted(config.items())), info.sample_shape)
        try:
            if key not in cache:
                cache[key] = encoder_flops(block.name, config, info.sample_shape)
        except Exception as exc:  # noqa: BLE001 - reported, e.g. a remote-code family without its code
            why = str(exc).split(";")[0].split("\n")[0]
            skipped.append(f"{block.key()} ({why[:117] + '...' if len(why) > 120 else why})")
            continue
        encoders[block.key()] = {**cache[key], "role": block.role}
    gen = generator_flops(r.generator.name, plain(resolved.config("generator")), info)
    train = [v for v in encoders.values() if v["role"] == "train"]
    step = gen["fwd"] + gen["fwd_bwd"] + sum(v["fwd"] + v["fwd_bwd"] for v in train)
    evaluation = gen["fwd"] + sum(v["fwd"] for v in encoders.values())
    return {"recipe": path.name, "shape": info.sample_shape, "data": data_note, "generator": r.generator.name,
            "gen": gen, "encoders": encoders, "skipped": skipped, "step": step, "eval": evaluation,
            "batch": r.train.batch, "eval_samples": r.eval.bank_rows(), "eval_every": r.eval.every}


def si(flops: float) -> str:
    """FLOPs with an SI prefix: 7.97 T, 540.7 G, 1.2 M."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f} "


def report(costs: list[dict], targets: dict[str, float]) -> None:
    seen = {}
    for c in costs:
        seen.update(c["encoders"])
    w = max([len(n) for n in seen] + [7]) + 2
    print(f"{'encoder':<{w}}{'role':>8}{'res':>5}{'Mparam':>8}{'FLOP fwd':>11}{'FLOP fwd+bwd→img':>18}")
    for name, v in seen.items():
        print(f"{name:<{w}}{v['role']:>8}{v['resolution'] or '-':>5}{v['params'] / 1e6:>8.0f}"
              f"{si(v['fwd']):>11}{si(v['fwd_bwd']):>18}")
    print()
    for c in costs:
        g = c["gen"]
        gen_share = (g["fwd"] + g["fwd_bwd"]) / c["step"]
        print(f"{c['recipe']}: generator {c['generator']} ({g['params'] / 1e6:.0f} M params: "
              f"{si(g['fwd'])}FLOP fwd, {si(g['fwd_bwd'])}FLOP fwd+bwd); samples "
              f"{' × '.join(map(str, c['shape']))} ({c['data']})")
        print(f"  step per generated image: {si(c['step'])}FLOP (generator {100 * gen_share:.0f} %); "
              f"a step of N = {c['batch']}: {si(c['step'] * c['batch'])}FLOP")
        print(f"  evaluation per sample: {si(c['eval'])}FLOP (generator fwd + every encoder fwd)")
        if c["eval_every"]:
            share = c["eval_samples"] * c["eval"] / (c["eval_every"] * c["batch"] * c["step"])
            print(f"  one evaluation ({c['eval_samples']} samples) = {100 * share:.2f} % of the "
                  f"{c['eval_every']} steps between evaluations")
        for s in c["skipped"]:
            print(f"  not counted: {s}")
        target = targets.get(c["recipe"])
        if target:
            need = target * c["step"] / 1e12
            cards = ", ".join(f"{100 * need / peak:.0f} % of the {card}'s {peak:.0f}"
                              for card, peak in PEAK_BF16_TFLOPS.items())
            print(f"  target {target:g} images/s needs {need:.0f} TFLOP/s: {cards} dense bf16 TFLOP/s")
        print()


def recipe_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments both step benchmarks take: recipes (default: the panel and ImageNet) and the
    class count a generator gets when the recipe's data is absent."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipes", nargs="*", type=Path,
                    default=[ROOT / "recipes" / "irdm_panel.toml", ROOT / "recipes" / "irdm_imagenet.toml"])
    ap.add_argument("--classes", type=int, default=1000, help="class count given to a class-conditional generator")
    return ap


def main() -> None:
    ap = recipe_parser(__doc__)
    ap.add_argument("--target", type=float, default=None, help="images/s to size (default: issue 8's, per recipe)")
    args = ap.parse_args()
    cache: dict = {}
    costs = []
    for path in args.recipes:
        try:
            costs.append(recipe_costs(path, args.classes, cache))
        except RdmxError as exc:
            print(f"{path.name}: not counted here: {exc}")
    targets = {c["recipe"]: args.target for c in costs} if args.target else TARGETS
    if costs:
        print(f"FLOPs counted by torch {torch.__version__}'s FlopCounterMode on the meta device "
              f"(real sizes, one image)")
        report(costs, targets)


if __name__ == "__main__":
    main()
