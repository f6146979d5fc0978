"""Feature sets as float tensors and the seeded equal-size subsampling every metric shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rdmx.errors import RdmxError

# Seed streams of the subsamples: the same rows are drawn for every encoder (the rows of one
# image set line up across encoders) and for every checkpoint.
STREAM_GEN, STREAM_TRAIN, STREAM_VAL = 1, 2, 3


def as_tensor(x: Any, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
    """A 2-D ``(rows, dim)`` tensor of ``dtype`` from a numpy array or tensor."""
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x.detach()
    if t.ndim != 2:
        raise RdmxError(f"features must be 2-D (rows, dim), got shape {tuple(t.shape)}")
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def subsample(x: torch.Tensor, n: int, seed: int, stream: int) -> torch.Tensor:
    """``n`` rows of ``x`` drawn without replacement from seed (seed, stream); all rows if n == len."""
    if n > len(x):
        raise RdmxError(f"cannot draw {n} rows from a set of {len(x)}")
    if n == len(x):
        return x
    idx = np.sort(np.random.default_rng([seed, stream]).permutation(len(x))[:n])
    return x[torch.as_tensor(idx, device=x.device)]


def equal_size(gen: torch.Tensor, train: torch.Tensor, val: torch.Tensor, n: int, seed: int = 0):
    """The three sets cut to the same number of rows, min(n, smallest set), by seeded subsamples."""
    if not (gen.shape[1] == train.shape[1] == val.shape[1]):
        raise RdmxError(
            f"feature dims differ: gen {gen.shape[1]}, train {train.shape[1]}, val {val.shape[1]}"
        )
    rows = min(n, len(gen), len(train), len(val))
    if rows < 2:
        raise RdmxError(f"need at least 2 rows per set, got {rows}")
    return (
        subsample(gen, rows, seed, STREAM_GEN),
        subsample(train, rows, seed, STREAM_TRAIN),
        subsample(val, rows, seed, STREAM_VAL),
        rows,
    )
