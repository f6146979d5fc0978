"""Sliced Wasserstein-2 between equal-size feature sets, and the SW ratio of the SW_rK protocol.

SW₂(X, Y) = sqrt(mean over M unit directions θ of mean_j (sort(Xθ)_j − sort(Yθ)_j)²). The M
directions come from one fixed seed (0 by default) through numpy's PCG64 generator, so they are
identical on every device, for every set, encoder and checkpoint. Projections run in chunks of
directions (memory N × chunk per set); squared differences are accumulated in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from rdmx.errors import RdmxError
from rdmx.evaluate.features import as_tensor, equal_size

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


@functools.lru_cache(maxsize=32)
def _directions_np(dim: int, count: int, seed: int) -> np.ndarray:
    theta = np.random.default_rng(seed).standard_normal((count, dim))
    return theta / np.linalg.norm(theta, axis=1, keepdims=True)


def unit_directions(dim: int, count: int = 1024, seed: int = 0) -> torch.Tensor:
    """``(dim, count)`` float64 unit directions, column j the j-th direction of seed ``seed``."""
    return torch.from_numpy(_directions_np(dim, count, seed).T.copy())


def sliced_w2_to(
    sets: Sequence[Any],
    reference: Any,
    *,
    directions: int | torch.Tensor = 1024,
    seed: int = 0,
    chunk: int = 128,
    precision: str = "float64",
) -> list[float]:
    """SW₂ of each set in ``sets`` to ``reference`` (all with the same number of rows).

    The reference is projected and sorted once per chunk of directions and shared by all sets.
    ``directions`` is a count (drawn from ``seed``) or an explicit ``(dim, M)`` matrix.
    """
    if precision not in PRECISIONS:
        raise RdmxError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    ref = as_tensor(reference, dtype)
    xs = [as_tensor(s, dtype, ref.device) for s in sets]
    for x in xs:
        if x.shape != ref.shape:
            raise RdmxError(f"sliced W2 needs equal-size sets: {tuple(x.shape)} vs {tuple(ref.shape)}")
    theta = directions if isinstance(directions, torch.Tensor) else unit_directions(ref.shape[1], directions, seed)
    theta = theta.to(device=ref.device, dtype=dtype)
    if theta.shape[0] != ref.shape[1]:
        raise RdmxError(f"directions have dim {theta.shape[0]}, features {ref.shape[1]}")
    total = torch.zeros(len(xs), dtype=torch.float64, device=ref.device)
    for start in range(0, theta.shape[1], chunk):
        block = theta[:, start : start + chunk]
        ref_sorted = torch.sort(ref @ block, dim=0).values
        for i, x in enumerate(xs):
            diff = torch.sort(x @ block, dim=0).values - ref_sorted
            total[i] += diff.double().square().sum()
    mean = total / (ref.shape[0] * theta.shape[1])
    return mean.sqrt().tolist()


def sliced_w2(x: Any, y: Any, **kw: Any) -> float:
    """SW₂ between two equal-size sets (see :func:`sliced_w2_to` for the options)."""
    return sliced_w2_to([x], y, **kw)[0]


class SlicedRatio(NamedTuple):
    ratio: float  # SW₂(gen, train) / SW₂(val, train)
    gen: float  # SW₂(gen, train)
    val: float  # SW₂(val, train)
    rows: int  # rows per set actually used


def sw_ratio(
    gen: Any,
    train: Any,
    val: Any,
    *,
    n: int = 16384,
    directions: int = 1024,
    seed: int = 0,
    chunk: int = 128,
    precision: str = "float64",
    device: Any = None,
) -> SlicedRatio:
    """r = SW₂(gen, train) / SW₂(val, train) on equal-size seeded subsamples of ``n`` rows."""
    g, t, v, rows = equal_size(gen, train, val, n, seed, PRECISIONS.get(precision, torch.float64), device)
    sw_gen, sw_val = sliced_w2_to([g, v], t, directions=directions, seed=seed, chunk=chunk, precision=precision)
    if sw_val <= 0.0:
        raise RdmxError("SW ratio: the validation set is identical to the train subsample (SW = 0)")
    return SlicedRatio(sw_gen / sw_val, sw_gen, sw_val, rows)
