"""Compute precision of generators (convention 2): parameters stay float32, and a generator
whose config asks for ``precision = "bfloat16"`` runs its own forward under bf16 autocast and
returns float32 samples. The optimiser therefore always updates float32 master weights."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["float32", "bfloat16"]


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for "bfloat16"; nothing at all for "float32" (bit-identical to
    no context)."""
    if precision == "float32":
        return contextlib.nullcontext()
    if precision != "bfloat16":
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def output(x: torch.Tensor, precision: str) -> torch.Tensor:
    """A generator's samples in float32 after a bf16 forward (float32/float64 runs pass through)."""
    return x.float() if precision != "float32" and x.dtype != torch.float64 else x
