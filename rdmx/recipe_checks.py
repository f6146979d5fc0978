"""Checks of a validated recipe that need the registry's metadata, run by ``rdmx show`` and
before any work starts: values that each validate but cannot work together.

* class-joint matching needs labelled data (``DatasetMeta.classes``);
* an encoder with a ``channels`` option takes images of the data's channels;
* the memory the recipe's sizes need, against this machine's memory. The estimate counts only
  what rdmx itself must hold at once (float32, 4 bytes per value), from the registered
  metadata (sample shape, encoder dims) — a lower bound, so a recipe refused here cannot run:
  - one training step keeps the features of the whole generated batch and their gradients
    (gradient caching): ``train.batch × Σ_train dim × 8`` bytes;
  - evaluation holds, per encoder, the features of ``eval.n`` generated samples and the two real
    banks, and the samples themselves only when a sample metric reads them:
    ``eval.n × (3 Σ dim [+ sample size]) × 4`` bytes;
  - one gradient-cached chunk of generated samples: ``train.micro_batch × sample size × 4``
    (not checked for ``"auto"``, which probes a chunk that fits).
"""

from __future__ import annotations

import math
import os
from typing import Any

BYTES = 4  # float32


def physical_memory() -> int | None:
    """This machine's memory in bytes ($RDMX_MEMORY_BYTES overrides; None when unknown)."""
    override = os.environ.get("RDMX_MEMORY_BYTES", "").strip()
    if override:
        try:
            value = float(override)
        except ValueError:
            value = math.nan
        if not 0 < value < math.inf:
            from rdmx.errors import RdmxError

            raise RdmxError(f"RDMX_MEMORY_BYTES must be a positive number of bytes (e.g. 64e9), got {override!r}")
        return int(value)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def _declared(plugins, kind: str, name: str, key: str, config: Any) -> Any:
    try:
        return plugins.get(kind, name).declared(key, config)
    except Exception:  # noqa: BLE001 - an unknowable value skips its check
        return None


def memory_needs(resolved, plugins) -> list[tuple[str, int, str]]:
    """(recipe field, bytes, what for) of the sizes rdmx holds at once."""
    r = resolved.recipe
    shape = _declared(plugins, "datasets", r.data.name, "sample_shape", resolved.config("data"))
    sample = math.prod(shape) if shape else None
    dims = {}
    for i, enc in enumerate(r.battery.encoders):
        d = _declared(plugins, "encoders", enc.name, "dim", resolved.config(f"battery.encoders[{i}]"))
        dims[enc.key()] = (int(d) if isinstance(d, int) else 0, enc.role)
    d_train = sum(d for d, role in dims.values() if role == "train")
    d_all = sum(d for d, _ in dims.values())
    t = r.train
    needs = []
    if d_train:
        needs.append(("train.batch", t.batch * d_train * 2 * BYTES,
                      f"the features of the whole generated batch and their gradients (N = {t.batch} × "
                      f"{d_train} training feature dims)"))
    kept = (sample or 0) if r.eval.metrics else 0  # samples are kept only for sample metrics (else streamed)
    if kept or d_all:
        needs.append(("eval.n", r.eval.n * (kept + 3 * d_all) * BYTES,
                      f"the features of {r.eval.n} evaluation samples{', the samples themselves' if kept else ''} "
                      f"and the real banks"))
    if sample and t.micro_batch != "auto":  # "auto" probes a chunk that fits
        chunk = t.micro_batch or t.batch
        needs.append(("train.micro_batch" if t.micro_batch else "train.batch", chunk * sample * BYTES,
                      f"one chunk of {chunk} generated samples of shape {tuple(shape)}"))
    return needs


def check_recipe(resolved, plugins, available: int | None = None) -> list[str]:
    """Problems of a validated recipe (empty when none), each naming its field."""
    r = resolved.recipe
    src = resolved.source
    problems = []
    if r.joint.kind == "class":
        classes = _declared(plugins, "datasets", r.data.name, "classes", resolved.config("data"))
        if classes == 0:
            problems.append(f"{src}: joint.kind: 'class' matches the joint law of images and class labels, "
                            f"but data '{r.data.name}' has no classes; use joint.kind = 'marginal'")
    shape = _declared(plugins, "datasets", r.data.name, "sample_shape", resolved.config("data"))
    if shape and len(shape) == 3:  # images: an encoder configured for other channels fails on its first batch
        for i, enc in enumerate(r.battery.encoders):
            channels = getattr(resolved.config(f"battery.encoders[{i}]"), "channels", None)
            if isinstance(channels, int) and channels != shape[0]:
                problems.append(f"{src}: battery.encoders[{i}].channels: {channels}, but data '{r.data.name}' has "
                                f"{shape[0]}-channel images; set channels = {shape[0]}")
    available = physical_memory() if available is None else available
    if available:
        for field, need, what in memory_needs(resolved, plugins):
            if need > available:
                problems.append(f"{src}: {field}: needs at least {human(need)} for {what}, more than this "
                                f"machine's {human(available)} of memory")
    return problems
