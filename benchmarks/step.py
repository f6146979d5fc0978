"""Benchmark: the gradient-cached training step of a recipe on the current device.

Default: the paper's panel (recipes/irdm_panel.toml) with random real-size weights on a
synthetic 256-px folder, the paper's generator when a ``pmf-*`` generator is registered, else
the recipe's stand-in conv generator. Everything is measured in this run, on this device:

* the step (``Trainer.train_step``: gradient, clip, AdamW, balancer) for each ``--runs`` entry
  ``MODE:CHUNK`` — MODE ``features`` (phase 3 backpropagates through every encoder at once: the
  previous scheme, the baseline) or ``image`` (the loss gradient cached at the image, one encoder
  alive at a time); CHUNK a micro batch or ``auto`` (the probe). Images/s, peak memory (CUDA:
  max allocated; everywhere: peak saved activations), the phases (generation, pass 1, loss,
  pass 3, update, balancer), achieved TFLOP/s (matmul/conv/attention FLOPs counted by
  ``torch.utils.flop_counter``) and its ratio to a bf16 matmul, and the step against the sum of
  its components timed alone at the same chunk;
* each component alone at the chunk: generator forward / forward+backward, every training
  encoder forward / forward+backward into the image;
* loss + estimator + balancer at N = ``--loss-n`` (default: the recipe's N) and their share of
  a step at that N;
* evaluation of ``--eval-n`` and half as many samples (SW_rK, MMDr, FD over every encoder) at ``eval.chunk``,
  extrapolated to 16,384 samples along the line through both (fixed + per-sample seconds; the
  recipe's MMDr rows are set to n, since its 50,000 streamed rows would not scale), against 500
  training steps at N;
* the targets of issue 8, each with the number that checks it.

  python benchmarks/step.py --tiny --device cpu                        # tiny panel on CPU (seconds)
  python benchmarks/step.py --runs features:8,image:8,image:auto --batch 256 --weights-dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # rdmx from this checkout; benchmarks/timing.py

from timing import count_flops, matmul_tflops, sync, timed  # noqa: E402

from rdmx.errors import RdmxError  # noqa: E402
from rdmx.plugins import get_plugins  # noqa: E402
from rdmx.recipe import validate_recipe  # noqa: E402
from rdmx.recipe_compose import read_recipe  # noqa: E402
from rdmx.reference.bundle import build_reference  # noqa: E402
from rdmx.train.build import build_components  # noqa: E402
from rdmx.train.evaluation import evaluate_generator  # noqa: E402
from rdmx.train.loop import Trainer  # noqa: E402
from rdmx.train.memory import SavedTensorMeter  # noqa: E402
from rdmx.train.micro_batch import probe_chunk  # noqa: E402
from rdmx.train.objective import make_loss_fn  # noqa: E402

TINY_RESOLUTION = {"inception": 75}  # --tiny: encoders at 64 px, or their smallest input
TODAY_IMAGES_PER_S = 12.4  # issue 8: the panel on one H100 before this work (stand-in generator, chunk 8)
EVAL_TARGET_N = 16384


# -- timing ------------------------------------------------------------------------------------
class PhaseTimer:
    """A ``phase(name)`` callback for the engine: wall time per phase, synchronised on CUDA."""

    def __init__(self, device):
        self.device, self.s = device, defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name):
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.s[name] += time.perf_counter() - t0


# -- set-up --------------------------------------------------------------------------------------
def synthetic_folder(root: Path, size: int, classes: int = 4, per_class: int = 2) -> Path:
    """A tiny class-nested image folder (train/ and val/) of random ``size``-px PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def paper_generator() -> str | None:
    """The paper's generator ``pmf-h`` when registered, else another ``pmf-*`` one, else None."""
    names = sorted(n for n in get_plugins().registry("generators").names() if n.startswith("pmf"))
    return "pmf-h" if "pmf-h" in names else (names[0] if names else None)


def make_recipe(args, folder: Path) -> tuple[dict, list[str]]:
    raw = read_recipe(args.recipe)  # its includes (e.g. the panel battery) merged in
    notes = []
    raw["tracking"] = {"backend": "none"}
    raw["train"].update(batch=args.batch, micro_batch=8 if args.batch % 8 == 0 else 0)
    raw["train"]["device"] = args.device
    raw["train"]["compile"] = args.compile
    if raw["data"].get("name") == "image-folder":
        raw["data"].update(path=str(folder / "train"), val_path=str(folder / "val"), size=args.size)
    raw.setdefault("estimator", {})
    if raw["estimator"].get("name", "mmd-nystrom") == "mmd-nystrom":
        raw["estimator"]["kmeans_iters"] = 2  # the landmarks' quality does not change the step's cost
        if args.tiny:
            raw["estimator"]["landmarks"] = 64
    rgb = raw["data"].get("name") == "image-folder"  # pMF makes RGB images (not the digits' grey ones)
    gen = args.generator or (paper_generator() if rgb else None)
    if gen:
        fields = get_plugins().registry("generators").get(gen).config.model_fields
        raw["generator"] = {"name": gen, **({"weights": "random"} if "weights" in fields else {}),
                            **({"tiny": True} if args.tiny and "tiny" in fields else {})}
        notes.append(f"generator {gen} (random weights)")
    else:
        notes.append(f"generator '{raw['generator']['name']}' (the recipe's own: no pmf-* generator registered, "
                     f"or the data is not an RGB image folder)")
    if args.tiny and raw["generator"].get("name") == "conv":
        raw["generator"].update(width=16, noise_dim=16)
    if args.generator_precision and raw["generator"].get("name") == "conv":
        raw["generator"]["precision"] = args.generator_precision
    encs = []
    for e in raw["battery"]["encoders"]:
        if e["name"] in args.skip:
            notes.append(f"encoder {e['name']} skipped (--skip)")
            continue
        entry = get_plugins().registry("encoders").get(e["name"])
        fields = entry.config.model_fields
        e = dict(e)
        if "weights" in fields:
            e["weights"] = "random"
        if args.tiny and "tiny" in fields:
            e["tiny"] = True
        if args.tiny and "tiny" in fields and "resolution" in fields:
            e["resolution"] = TINY_RESOLUTION.get(e["name"], 64)
        encs.append(e)
    raw["battery"]["encoders"] = encs
    if args.weights_dtype:
        raw["battery"]["weights_dtype"] = args.weights_dtype
    for item in args.set:
        from rdmx.recipe import parse_value, set_path

        key, _, value = item.partition("=")
        set_path(raw, key.strip(), parse_value(value.strip()))
    return raw, notes


def synthetic_refs(trainer, rows_min: int, eval_rows: int, seed: int = 0):
    """Per-encoder frozen references from random features (their cost depends on m and d only),
    zero floors (every encoder violates: all weights non-zero, the worst case for phase 3) and
    random evaluation banks."""
    c, r = trainer.c, trainer.recipe
    g = torch.Generator().manual_seed(seed)
    request = c.estimator.request()
    refs = {}
    classes = max(c.info.num_classes, 1)
    for k, enc in c.encoders.items():
        dim = enc.dim
        ref = None
        if k in c.train_names:
            feats = torch.randn(rows_min, dim, generator=g)
            labels = torch.randint(0, classes, (rows_min,), generator=g)
            chunks = (lambda f=feats, y=labels: iter([(f, y if r.joint.kind == "class" else None)]))
            ref = build_reference(chunks, request, joint=r.joint, encoder_fingerprint=enc.fingerprint,
                                  data_fingerprint="bench", device=c.device)
        bank = torch.randn(eval_rows, dim, generator=g)
        refs[k] = SimpleNamespace(reference=ref, floor=0.0, train_bank=bank, val_bank=bank + 0.1 * torch.randn(
            eval_rows, dim, generator=g))
    trainer.refs = refs
    trainer.floors = {k: 0.0 for k in c.train_names}
    if hasattr(c.balancer, "set_floors"):
        c.balancer.set_floors(trainer.floors)


# -- measurements ----------------------------------------------------------------------------------
def chunk_inputs(trainer, chunk: int):
    """The generator, one chunk of fixed noise and conditions, and its (detached) images."""
    c, dev = trainer.c, trainer.c.device
    gen = c.generator
    g = torch.Generator().manual_seed(0)
    noise, cond = gen.sample_noise(chunk, g, dev), gen.sample_conditions(chunk, g, dev)
    with torch.no_grad():
        x = gen(noise, cond).detach()
    return gen, noise, cond, x


def measure_components(trainer, chunk: int, repeats: int) -> dict:
    """Each component alone at ``chunk``: generator forward (no grad) and forward+backward, every
    training encoder forward (no grad) and forward+backward into the image."""
    c, dev = trainer.c, trainer.c.device
    gen, noise, cond, x = chunk_inputs(trainer, chunk)
    out = {}

    def gen_fwd():
        with torch.no_grad():
            gen(noise, cond)

    def gen_fwdbwd():
        gen(noise, cond).backward(torch.ones_like(x))
        gen.zero_grad(set_to_none=True)

    out["generator"] = {"fwd": timed(gen_fwd, dev, repeats), "fwdbwd": timed(gen_fwdbwd, dev, repeats)}
    for k in c.train_names:
        enc = c.encoders[k]

        def enc_fwd(enc=enc):
            with torch.no_grad():
                enc(x)

        def enc_fwdbwd(enc=enc):
            leaf = x.clone().requires_grad_(True)
            f = enc(leaf)
            f.backward(torch.ones_like(f))

        out[k] = {"fwd": timed(enc_fwd, dev, repeats), "fwdbwd": timed(enc_fwdbwd, dev, repeats)}
    return out


def measure_compile(trainer, chunk: int, names: list[str], repeats: int) -> dict:
    """Forward+backward at ``chunk`` of the generator and the named encoders, eager vs
    ``torch.compile`` (what ``train.compile`` buys each component; compile time reported)."""
    c, dev = trainer.c, trainer.c.device
    gen, noise, cond, x = chunk_inputs(trainer, chunk)
    out = {}
    for name in names:
        module = gen if name == "generator" else c.encoders[name]

        def fwdbwd(module=module, name=name):
            if name == "generator":
                module(noise, cond).backward(torch.ones_like(x))
                module.zero_grad(set_to_none=True)
            else:
                leaf = x.clone().requires_grad_(True)
                f = module(leaf)
                f.backward(torch.ones_like(f))

        eager = timed(fwdbwd, dev, repeats)
        module.compile(dynamic=False)
        t0 = time.perf_counter()
        fwdbwd()
        sync(dev)
        compile_s = time.perf_counter() - t0
        compiled = timed(fwdbwd, dev, repeats)
        module._compiled_call_impl = None  # back to eager for the rest of the run
        out[name] = {"eager": eager, "compiled": compiled, "compile_s": compile_s}
    return out


def measure_run(trainer, mode: str, chunk, steps: int, budget: int | None) -> dict:
    """Steps of the engine in ``mode`` at ``chunk`` (an int or "auto")."""
    c, dev = trainer.c, trainer.c.device
    trainer.cache_mode = mode
    trainer._micro = None if chunk == "auto" else int(chunk)
    trainer.probe_budget = budget
    res = {"mode": mode, "chunk_arg": str(chunk)}
    try:
        micro = trainer.micro_batch
        res["chunk"] = micro
        trainer.train_step(0)  # warm-up (and compilation)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(steps):
            sync(dev)
            t0 = time.perf_counter()
            trainer.train_step(i + 1)
            sync(dev)
            times.append(time.perf_counter() - t0)
        res["step_s"] = statistics.median(times)
        res["images_per_s"] = trainer.recipe.train.batch / res["step_s"]
        if dev.type == "cuda":
            res["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        timer = PhaseTimer(dev)
        trainer.phase = timer
        try:
            trainer.train_step(steps + 1)
        finally:
            trainer.phase = None
        res["phases_s"] = dict(timer.s)
        owners = {"generator": c.generator, **{k: c.encoders[k] for k in c.train_names}}
        with SavedTensorMeter(owners) as meter:
            trainer.train_step(steps + 2)
        res["activations_mib"] = meter.peak / 2**20
        res["encoders_alive"] = meter.max_concurrent - 1
    except RdmxError as exc:  # out of memory: reported in the table
        res["error"] = str(exc)
    finally:
        c.generator.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return res


def step_flops(trainer, micro: int, loss_n: int) -> tuple[float, float]:
    """(FLOPs of one chunk: phase 1 + phase 3, FLOPs of the loss at ``loss_n`` rows)."""
    c = trainer.c
    encs = {k: c.encoders[k] for k in c.train_names}
    direct = micro == trainer.local_batch
    chunk = count_flops(lambda: probe_chunk(c.generator, encs, micro, c.device, direct=direct), c.device)
    loss = count_flops(lambda: loss_phase(trainer, loss_n)(), c.device)
    return chunk, loss


def loss_phase(trainer, n: int):
    """The loss phase alone at ``n`` rows: every training encoder's estimator forward+backward on
    random features (feature leaves), weighted and self-normalised as in training."""
    c, dev = trainer.c, trainer.c.device
    refs = {k: trainer.refs[k].reference for k in c.train_names}
    g = torch.Generator().manual_seed(1)
    feats = {k: torch.randn(n, c.encoders[k].dim, generator=g).to(dev) for k in c.train_names}
    cond = c.generator.sample_conditions(n, g, dev)
    est_rng = torch.Generator().manual_seed(2)
    loss_fn = make_loss_fn(c.estimator, refs, c.balancer.weights, lambda: est_rng)

    def run():
        leaves = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
        loss, _ = loss_fn(leaves, cond)
        loss.backward()

    return run


def measure_balancer(trainer) -> float:
    c = trainer.c
    state = c.balancer.state_dict() if hasattr(c.balancer, "state_dict") else None
    raws = {k: 0.5 for k in c.train_names}
    s = timed(lambda: c.balancer.update(raws), torch.device("cpu"), repeats=5)
    if state is not None:
        c.balancer.load_state_dict(state)
    return s


def measure_eval(trainer, n: int) -> dict:
    """An evaluation of ``n`` and of ``n / 2`` samples (MMDr on the same rows: the recipe's 50,000
    streamed MMDr rows would not scale with n), and the line through them: a fixed part (banks,
    directions, Fréchet square roots) plus a per-sample part, extrapolated to 16,384 samples."""
    c, dev = trainer.c, trainer.c.device
    chunk = trainer.eval_chunk

    def seconds(rows: int) -> float:
        e = trainer.recipe.eval.model_copy(update={"n": rows, "mmd_n": None})
        return timed(lambda: evaluate_generator(c.generator, c.encoders, c.roles, trainer.refs, e, chunk=chunk,
                                                device=dev), dev, repeats=1, warmup=0)

    half, full = seconds(n // 2), seconds(n)
    per_sample = max(full - half, 0.0) / (n - n // 2)
    fixed = max(full - per_sample * n, 0.0)
    return {"n": n, "chunk": chunk, "s": full, "s_half": half, "fixed_s": fixed, "per_sample_s": per_sample,
            "s_16384": fixed + per_sample * EVAL_TARGET_N, "s_16384_linear": full * EVAL_TARGET_N / n,
            "encoders": len(c.encoders)}


# -- report ------------------------------------------------------------------------------------
def fmt(v, spec=".1f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def report(info: dict) -> str:
    lines = []
    p = lines.append
    p(f"device: {info['device']}   bf16 matmul: {info['matmul_tflops']:.2f} TFLOP/s (same run)")
    p(f"recipe: {info['recipe']}   N = {info['batch']} per step, {info['size']} px   " + "; ".join(info["notes"]))
    p(f"generator: {info['generator']} ({info['generator_params'] / 1e6:.1f} M params, {info['generator_precision']})   "
      f"training encoders: {len(info['train'])}   held out: {len(info['heldout'])}")
    p("encoders: " + ", ".join(f"{k} ({v['dim']}, {v['weights_dtype']}, {v['params'] / 1e6:.0f} M)"
                               for k, v in info["encoders"].items()))
    p("")
    p("components alone at the chunk (ms per chunk; images/s):")
    comp = info["components"]
    p(f"  {'component':<14} {'fwd ms':>9} {'fwd+bwd ms':>11} {'img/s fwd+bwd':>14}")
    for k, v in comp["items"].items():
        p(f"  {k:<14} {v['fwd'] * 1e3:>9.2f} {v['fwdbwd'] * 1e3:>11.2f} {comp['chunk'] / v['fwdbwd']:>14.1f}")
    p(f"  (chunk {comp['chunk']}; one chunk of a step costs generator fwd + fwd+bwd and every encoder fwd + fwd+bwd: "
      f"{comp['chunk_sum_s'] * 1e3:.1f} ms)")
    p("")
    p("the step (median of timed steps; phases from one synchronised step):")
    head = (f"  {'mode':<9} {'chunk':>5} {'s/step':>8} {'img/s':>8} {'× base':>7} {'peak GiB':>9} {'act. MiB':>9} "
            f"{'enc alive':>9} {'gen %':>6} {'pass1 %':>7} {'loss %':>6} {'pass3 %':>7} {'upd+bal %':>9} "
            f"{'TFLOP/s':>8} {'/matmul':>7} {'/parts':>6}")
    p(head)
    base = info["runs"][0].get("images_per_s") if info["runs"] else None
    for r in info["runs"]:
        if "error" in r:
            p(f"  {r['mode']:<9} {r.get('chunk', r['chunk_arg']):>5}  {r['error']}")
            continue
        ph = r["phases_s"]
        tot = sum(ph.values()) or float("nan")

        def share(*names, ph=ph, tot=tot):
            return 100 * sum(ph.get(n, 0.0) for n in names) / tot

        p(f"  {r['mode']:<9} {r['chunk']:>5} {r['step_s']:>8.3f} {r['images_per_s']:>8.1f} "
          f"{r['images_per_s'] / base if base else float('nan'):>7.2f} {fmt(r.get('peak_gib'), '.1f'):>9} "
          f"{r['activations_mib']:>9.1f} {r['encoders_alive']:>9} {share('generate'):>6.1f} {share('encode'):>7.1f} "
          f"{share('loss'):>6.1f} {share('regenerate', 'encoders', 'generator_backward'):>7.1f} "
          f"{share('update', 'balancer'):>9.1f} {fmt(r.get('tflops'), '.2f'):>8} {fmt(r.get('mfu'), '.3f'):>7} "
          f"{fmt(r.get('vs_parts'), '.2f'):>6}")
    p("  act. MiB: peak saved activations; enc alive: most encoders' graphs alive at once; /matmul: achieved "
      "TFLOP/s over the bf16 matmul's; /parts: step time over the components' sum at its chunk")
    if info.get("compile"):
        p("")
        p(f"torch.compile, forward+backward at chunk {info['components']['chunk']} (train.compile):")
        p(f"  {'component':<14} {'eager ms':>9} {'compiled ms':>12} {'speed-up':>9} {'compile s':>10}")
        for k, v in info["compile"].items():
            p(f"  {k:<14} {v['eager'] * 1e3:>9.2f} {v['compiled'] * 1e3:>12.2f} {v['eager'] / v['compiled']:>9.2f} "
              f"{v['compile_s']:>10.1f}")
    p("")
    lo = info["loss"]
    p(f"loss + estimator + balancer at N = {lo['n']}: {lo['loss_s'] * 1e3:.1f} ms + {lo['balancer_s'] * 1e3:.2f} ms "
      f"= {100 * lo['share']:.2f} % of a step at that N ({lo['step_s']:.2f} s, from the best run's per-image cost)")
    ev = info["eval"]
    p(f"evaluation of {EVAL_TARGET_N} samples, {ev['encoders']} encoders, chunk {ev['chunk']}: {ev['s_16384']:.1f} s "
      f"= {ev['fixed_s']:.1f} s fixed + {1e3 * ev['per_sample_s']:.2f} ms per sample (the line through n = "
      f"{ev['n'] // 2} and {ev['n']}: {ev['s_half']:.1f} s, {ev['s']:.1f} s)")
    p(f"  = {100 * ev['share_500']:.1f} % of 500 training steps at N = {lo['n']} ({500 * lo['step_s']:.0f} s); "
      f"at most {ev['s_16384_linear']:.1f} s = {100 * ev['s_16384_linear'] / (500 * lo['step_s']):.1f} % if all of the "
      f"{ev['n']}-sample time grew with n")
    p("")
    p("targets (issue 8):")
    for t in info["targets"]:
        p(f"  {t}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "irdm_panel.toml"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny encoders and generator (CPU)")
    ap.add_argument("--batch", type=int, default=None, help="N per step (default: 256 on CUDA, 32 tiny)")
    ap.add_argument("--size", type=int, default=None, help="image size (default 256; 32 tiny)")
    ap.add_argument("--runs", default=None, help="MODE:CHUNK,... (default features:8,image:8,image:auto)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each component timing")
    ap.add_argument("--loss-n", type=int, default=None, help="N of the loss measurement (default: the recipe's)")
    ap.add_argument("--eval-n", type=int, default=None, help="samples of the evaluation measurement")
    ap.add_argument("--generator", default=None, help="generator name (default: pmf-* when registered)")
    ap.add_argument("--generator-precision", choices=["float32", "bfloat16"], default=None)
    ap.add_argument("--weights-dtype", choices=["float32", "bfloat16"], default=None, help="battery.weights_dtype")
    ap.add_argument("--compile", action="store_true", help="train.compile = true for every run")
    ap.add_argument("--compile-components", nargs="*", default=[],
                    help="also time these components (generator, encoder labels) eager vs compiled")
    ap.add_argument("--skip", nargs="*", default=["radio"], help="encoders left out (radio: remote code)")
    ap.add_argument("--budget-mib", type=float, default=None, help="saved-activation budget of the auto probe")
    ap.add_argument("--set", action="append", default=[], help="recipe override path=value")
    ap.add_argument("--json", default=None, help="write every number here")
    ap.add_argument("--out", default=None, help="write the table here too")
    args = ap.parse_args()
    args.batch = args.batch or (32 if args.tiny else 256)
    args.size = args.size or (32 if args.tiny else 256)
    args.runs = args.runs or "features:8,image:8,image:auto"
    device = torch.device(args.device)
    recipe_n = read_recipe(args.recipe)["train"]["batch"]
    loss_n = args.loss_n or recipe_n
    eval_n = args.eval_n or (256 if args.tiny else 2048)
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_folder(Path(tmp) / "data", args.size)
        raw, notes = make_recipe(args, folder)
        resolved = validate_recipe(raw, f"{args.recipe} (benchmark)")
        skipped = []
        t0 = time.perf_counter()
        comp = build_components(resolved, skip_encoder=lambda k, e: skipped.append(f"{k}: {str(e)[:160]}"))
        build_s = time.perf_counter() - t0
        notes += [f"not built: {s}" for s in skipped]
        trainer = Trainer(resolved, Path(tmp) / "run", components=comp, progress=False)
        trainer.make_optimizer()
        t0 = time.perf_counter()
        synthetic_refs(trainer, rows_min=max(2 * getattr(resolved.config("estimator"), "landmarks", 256), 1024),
                       eval_rows=eval_n)
        refs_s = time.perf_counter() - t0
        c = trainer.c
        print(f"built {len(c.encoders)} encoders in {build_s:.0f} s, synthetic references in {refs_s:.0f} s",
              file=sys.stderr, flush=True)
        info = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "torch": torch.__version__, "recipe": Path(args.recipe).name, "batch": args.batch, "size": args.size,
            "notes": notes, "generator": resolved.recipe.generator.name,
            "generator_params": sum(p.numel() for p in c.generator.parameters()),
            "generator_precision": getattr(c.generator, "precision", "float32"),
            "train": c.train_names, "heldout": [k for k in c.encoders if k not in c.train_names],
            "encoders": {k: {"dim": e.dim, "weights_dtype": e.spec.weights_dtype,
                             "params": sum(p.numel() for p in e.parameters())} for k, e in c.encoders.items()},
            "build_s": build_s, "matmul_tflops": matmul_tflops("bfloat16", device),
        }
        budget = int(args.budget_mib * 2**20) if args.budget_mib else None
        runs = []
        for spec in args.runs.split(","):
            mode, _, chunk = spec.partition(":")
            run = measure_run(trainer, mode, chunk or "auto", args.steps, budget)
            runs.append(run)
            print(f"run {spec}: {run.get('images_per_s', run.get('error'))}", file=sys.stderr, flush=True)
        ok = [r for r in runs if "error" not in r]
        best = max(ok, key=lambda r: r["images_per_s"]) if ok else None
        chunk = best["chunk"] if best else 8
        parts = measure_components(trainer, chunk, args.repeats)
        chunk_sum = sum(v["fwd"] + v["fwdbwd"] for v in parts.values())
        info["components"] = {"chunk": chunk, "items": parts, "chunk_sum_s": chunk_sum}
        if args.compile_components:
            info["compile"] = measure_compile(trainer, chunk, args.compile_components, args.repeats)
        loss_s = timed(loss_phase(trainer, loss_n), device, repeats=3)
        balancer_s = measure_balancer(trainer)
        for r in ok:
            accumulation = args.batch // r["chunk"]
            flops_chunk, flops_loss = step_flops(trainer, r["chunk"], args.batch)
            r["flops"] = accumulation * flops_chunk + flops_loss
            r["tflops"] = r["flops"] / r["step_s"] / 1e12
            r["mfu"] = r["tflops"] / info["matmul_tflops"]
            if r["chunk"] == chunk:
                r["vs_parts"] = r["step_s"] / (accumulation * chunk_sum)
        per_image = None
        if best:
            ph = best["phases_s"]
            non_loss = sum(v for k, v in ph.items() if k not in ("loss", "balancer")) * best["step_s"] / sum(ph.values())
            per_image = non_loss / args.batch
        step_at_n = (per_image * loss_n if per_image else float("nan")) + loss_s + balancer_s
        info["runs"] = runs
        info["loss"] = {"n": loss_n, "loss_s": loss_s, "balancer_s": balancer_s, "step_s": step_at_n,
                        "share": (loss_s + balancer_s) / step_at_n}
        trainer._micro = chunk  # evaluation chunk: eval.chunk, else 4 × the best run's micro batch
        ev = measure_eval(trainer, eval_n)
        ev["share_500"] = ev["s_16384"] / (500 * step_at_n)
        info["eval"] = ev
        info["targets"] = targets(info, best)
        info["wall_s"] = time.perf_counter() - t_start
    table = report(info)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(info, indent=2, default=str))


def targets(info: dict, best: dict | None) -> list[str]:
    out = []
    if best is None:
        return ["no run completed"]
    big = info["generator_params"] >= 5e8
    goal = 35.0 if big else 3 * TODAY_IMAGES_PER_S
    which = "≥ 35 img/s with a ~1B-parameter generator" if big else f"≥ 3 × {TODAY_IMAGES_PER_S} = {goal:.1f} img/s (stand-in generator)"
    out.append(f"throughput {which}: {best['images_per_s']:.1f} img/s ({best['mode']}, chunk {best['chunk']})"
               + ("" if info["device"].lower().find("h100") >= 0 or "h200" in info["device"].lower()
                  else "   [not an H100/H200: not comparable]"))
    peak = best.get("peak_gib")
    out.append(f"peak memory ≤ 70 GiB at the chosen chunk: {fmt(peak, '.1f')} GiB" + ("" if peak is not None else " (CPU: see act. MiB)"))
    out.append(f"loss + balancer + estimator ≤ 2 % of the step at N = {info['loss']['n']}: {100 * info['loss']['share']:.2f} %")
    out.append(f"evaluation of {EVAL_TARGET_N} samples ≤ 10 % of 500 steps: {100 * info['eval']['share_500']:.1f} %")
    return out


if __name__ == "__main__":
    main()
