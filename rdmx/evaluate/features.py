"""Feature sets as float tensors and the seeded equal-size subsampling every metric shares.

Rows are drawn before any conversion, so a large train bank (numpy array or tensor, any dtype)
is never copied whole: only the drawn rows become float tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rdmx.errors import RdmxError

# Seed streams of the subsamples: the same rows are drawn for every encoder (the rows of one
# image set line up across encoders) and for every checkpoint.
STREAM_GEN, STREAM_TRAIN, STREAM_VAL, STREAM_SIGMA = 1, 2, 3, 4


def as_tensor(x: Any, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
    """A 2-D ``(rows, dim)`` tensor of ``dtype`` from a numpy array or tensor."""
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x.detach()
    if t.ndim != 2:
        raise RdmxError(f"features must be 2-D (rows, dim), got shape {tuple(t.shape)}")
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def subsample(x: Any, n: int, seed: int, stream: int) -> Any:
    """``n`` rows of ``x`` (array or tensor) drawn without replacement from seed (seed, stream).

    All rows, untouched, when ``n`` equals the number of rows.
    """
    if n > len(x):
        raise RdmxError(f"cannot draw {n} rows from a set of {len(x)}")
    if n == len(x):
        return x
    idx = np.sort(np.random.default_rng([seed, stream]).permutation(len(x))[:n])
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, device=x.device)]
    return np.asarray(x)[idx]


def equal_size(gen: Any, train: Any, val: Any, n: int, seed: int = 0, dtype: torch.dtype = torch.float64,
               device: Any = None):
    """The three sets cut to the same number of rows, min(n, smallest set), by seeded subsamples.

    Returns ``(gen, train, val, rows)`` as ``dtype`` tensors on ``device`` (default: where they are).
    """
    shapes = [tuple(np.shape(s)) if not isinstance(s, torch.Tensor) else tuple(s.shape) for s in (gen, train, val)]
    if any(len(s) != 2 for s in shapes):
        raise RdmxError(f"features must be 2-D (rows, dim), got shapes {shapes}")
    if not (shapes[0][1] == shapes[1][1] == shapes[2][1]):
        raise RdmxError(f"feature dims differ: gen {shapes[0][1]}, train {shapes[1][1]}, val {shapes[2][1]}")
    rows = min(n, shapes[0][0], shapes[1][0], shapes[2][0])
    if rows < 2:
        raise RdmxError(f"need at least 2 rows per set, got {rows}")
    g, t, v = (
        as_tensor(subsample(s, rows, seed, stream), dtype, device)
        for s, stream in ((gen, STREAM_GEN), (train, STREAM_TRAIN), (val, STREAM_VAL))
    )
    return g, t, v, rows
