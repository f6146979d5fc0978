"""``train.micro_batch = "auto"``: the largest gradient-caching chunk that fits in memory, and one
clear message when memory runs out anyway.

The probe runs the real gradient-cached step (:func:`rdmx.train.gradcache.cached_backward`) on
one chunk of ``m`` rows (the direct pass when ``m`` is the whole per-process batch, as training
then runs it) — phase 1 without grad, then phase 3: the generator chunk with grad, each
training encoder forward+backward into the image, the generator backward — for ``m`` among the
divisors of the per-process batch ``N / world``, largest first, and keeps the first that fits.
A divisor keeps ``N = micro × world × accumulation`` exact. "Fits" means:

* CUDA: no ``torch.OutOfMemoryError``, and the peak allocated memory plus the AdamW moments the
  optimiser will allocate at its first step (2 × the generator's parameter bytes) stays under
  ``headroom`` (90 %) of the device's memory;
* CPU (or any device, when a budget is given): the live saved-for-backward bytes stay under a
  budget (half the available RAM by default), counted by
  :class:`rdmx.train.memory.SavedTensorMeter`, which raises ``torch.OutOfMemoryError`` beyond it
  (the same hook lets tests inject an out-of-memory error deterministically).

The probe leaves no gradients and restores the RNG state. Under torchrun every rank probes its
own device and the job takes the smallest answer. A generator sharded with FSDP2 is not probed:
its forward and backward are collectives, and an out-of-memory error on one rank would leave the
others waiting in them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Mapping

import torch

from rdmx.errors import RdmxError
from rdmx.train.gradcache import cached_backward, direct_backward
from rdmx.train.memory import SavedTensorMeter

HEADROOM = 0.9  # share of a GPU's memory a probed chunk (plus AdamW moments) may use
CPU_BUDGET = 0.5  # share of the available RAM a probed chunk's saved activations may use


def divisors_desc(n: int) -> list[int]:
    """Divisors of ``n``, largest first."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]), reverse=True)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def probe_chunk(generator: torch.nn.Module, encoders: Mapping[str, torch.nn.Module], m: int,
                device: torch.device, direct: bool = False) -> None:
    """One gradient-cached chunk of ``m`` rows at its memory peak (random noise, a stand-in loss
    with non-zero feature gradients); ``direct``: one ordinary pass instead, as the trainer runs
    when the chunk is the whole per-process batch (every encoder's graph at once). The generator's
    gradients are dropped afterwards."""
    g = torch.Generator().manual_seed(0)
    noise = generator.sample_noise(m, g, device)
    cond = generator.sample_conditions(m, g, device)

    def loss_fn(features, _cond):
        raws = {k: f.square().mean() for k, f in features.items()}
        return sum(raws.values()), raws

    try:
        if direct:
            direct_backward(generator, encoders, noise, cond, loss_fn)
        else:
            cached_backward(generator, encoders, noise, cond, loss_fn, m)
    finally:
        generator.zero_grad(set_to_none=True)


def find_micro_batch(fits: Callable[[int], bool], local: int, log: Callable[[str], None] = print) -> int:
    """The largest divisor ``m`` of ``local`` with ``fits(m)``; ``fits`` may also raise
    ``torch.OutOfMemoryError`` (= does not fit)."""
    tried = []
    for m in divisors_desc(local):
        try:
            ok = fits(m)
        except torch.OutOfMemoryError:
            ok = False
        if ok:
            note = f" (larger chunks did not fit: {', '.join(map(str, tried))})" if tried else ""
            log(f"train.micro_batch = 'auto': {m} of {local} rows per process{note}")
            return m
        tried.append(m)
    raise RdmxError(
        "train.micro_batch = 'auto': not even a chunk of 1 sample fits in memory (the generator plus the "
        "largest training encoder): hold ViT encoders' weights in bf16 (battery.weights_dtype = \"bfloat16\"), "
        "recompute generator blocks (train.activation_checkpointing = true) or shard the generator "
        "(train.shard = \"fsdp\" under torchrun)")


def probe_micro_batch(generator, encoders, local: int, device: torch.device, *, budget_bytes: int | None = None,
                      log: Callable[[str], None] = print) -> int:
    """Find the micro batch for this process (see the module docstring)."""
    owners = {"generator": generator, **encoders}
    if budget_bytes is None and device.type != "cuda":
        import psutil

        budget_bytes = int(CPU_BUDGET * psutil.virtual_memory().available)
    reserve = 2 * sum(p.numel() * p.element_size() for p in generator.parameters() if p.requires_grad)

    def fits(m: int) -> bool:
        free_memory(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if budget_bytes is not None:
                with SavedTensorMeter(owners, budget_bytes=budget_bytes):
                    probe_chunk(generator, encoders, m, device, direct=m == local)
            else:
                torch.cuda.reset_peak_memory_stats(device)
                probe_chunk(generator, encoders, m, device, direct=m == local)
        if device.type == "cuda" and budget_bytes is None:
            total = torch.cuda.get_device_properties(device).total_memory
            peak = torch.cuda.max_memory_allocated(device) + reserve
            free_memory(device)
            return peak <= HEADROOM * total
        return True

    return find_micro_batch(fits, local, log)


def agree(value: int, device: torch.device) -> int:
    """The smallest ``value`` over the ranks of the job (itself in one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def out_of_memory(where: str, setting: str, value, extra: str = "") -> RdmxError:
    """The one-line error for an out-of-memory error in ``where``, naming the setting to lower."""
    return RdmxError(f"out of memory during {where}: lower {setting} (now {value}){extra}")


@contextlib.contextmanager
def out_of_memory_hint(where: str, setting: str, value, extra: str = "", device: torch.device | None = None):
    """Turn ``torch.OutOfMemoryError`` in the block into :func:`out_of_memory`'s one message."""
    try:
        yield
    except torch.OutOfMemoryError:
        if device is not None:
            free_memory(device)
        raise out_of_memory(where, setting, value, extra) from None
