"""Timing helpers shared by the benchmark scripts: synchronised wall-clock timing, a same-run
matmul baseline, and FLOP counting."""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of one call of ``fn`` over ``repeats`` calls after ``warmup`` (each call
    synchronised on CUDA; the median shrugs off a shared machine's stalls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def matmul_tflops(dtype: str | torch.dtype, device: torch.device, n: int | None = None, repeats: int = 5) -> float:
    """TFLOP/s of an n × n matmul in ``dtype`` (n: 8192 on CUDA, 1024 on CPU): the same-run
    baseline that achieved TFLOP/s are compared with."""
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    return 2 * n**3 / timed(lambda: a @ b, device, repeats, 2) / 1e12


def count_flops(fn, device: torch.device | None = None) -> int:
    """FLOPs of ``fn()`` by torch's FlopCounterMode. On the CPU, attention runs through the math
    backend while counting: the counter has no formula for torch's fused CPU attention kernel and
    would count its FLOPs as 0 (the CUDA kernels and meta tensors are counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    math = device is not None and device.type == "cpu"
    with sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext(), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()
