"""Timing helpers shared by the benchmark scripts: synchronised wall-clock timing, a same-run
matmul baseline, and FLOP counting."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, iters: int, warmup: int) -> float:
    """Seconds per call of ``fn`` (mean of ``iters`` after ``warmup`` calls, device synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t) / iters


def matmul_tflops(dtype: str | torch.dtype, device: torch.device, n: int, iters: int) -> float:
    """TFLOP/s of an n × n matmul in ``dtype``: the same-run baseline utilisation is measured against."""
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    return 2 * n**3 / timed(lambda: a @ b, device, iters, 1) / 1e12


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()
