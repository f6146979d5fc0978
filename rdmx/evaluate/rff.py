"""MMDr: random-Fourier-feature MMD² of generated vs train features, relative to validation vs train.

Gaussian kernel k(x, y) = exp(−‖x − y‖² / (2σ²)), σ by the median heuristic on the train set.
Feature map φ(x) = [cos(Wᵀx), sin(Wᵀx)] / sqrt(D) with D random frequencies W ~ N(0, σ⁻² I), so
φ(x)·φ(y) is an unbiased estimate of k(x, y) and φ(x)·φ(x) = 1 exactly. MMD² is the squared
distance of the two mean embeddings (the V-statistic of the approximate kernel).

Seed: the frequencies are drawn from numpy's PCG64 with :data:`RFF_SEED`, a fixed constant that no
training component uses (training estimators draw from the recipe's run seed and from torch's
generator), so evaluation never reuses the training RFF frequencies.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from rdmx.errors import RdmxError
from rdmx.evaluate.features import STREAM_SIGMA, as_tensor, equal_size, subsample
from rdmx.evaluate.plugin import RFF_SEED

SIGMA_ROWS = 10_000  # the paper's MMDr bandwidth: the median heuristic on 10,000 train rows
SIGMA_FLOOR = 1e-5


def median_sigma(x: Any, rows: int = SIGMA_ROWS, seed: int = 0) -> float:
    """sqrt of the median squared distance over distinct pairs of a seeded ``rows``-row subsample.

    An even count of pairs takes the mean of the two middle values (numpy's convention).
    """
    x = as_tensor(subsample(x, min(rows, len(x)), seed, STREAM_SIGMA), torch.float64)
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    d2 = (d2 + d2.T) / 2
    n = len(x)
    # every distinct pair appears twice off the diagonal; the doubled multiset has the same median
    off_diagonal = d2.flatten()[1:].view(n - 1, n + 1)[:, :-1]
    median = torch.as_tensor(np.median(off_diagonal.cpu().numpy()))
    return max(float(median.sqrt()), SIGMA_FLOOR)


def rff_frequencies(dim: int, features: int, sigma: float, seed: int = RFF_SEED) -> torch.Tensor:
    """``(dim, features)`` float64 frequencies W ~ N(0, σ⁻²)."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((dim, features)) / sigma)


def rff_mean_embedding(x: torch.Tensor, w: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """mean over rows of φ(x) = [cos(xW), sin(xW)] / sqrt(D), streamed over row chunks."""
    cos = torch.zeros(w.shape[1], dtype=torch.float64, device=x.device)
    sin = torch.zeros_like(cos)
    for start in range(0, len(x), chunk):
        proj = x[start : start + chunk] @ w
        cos += proj.cos().sum(dim=0)
        sin += proj.sin().sum(dim=0)
    total = torch.cat([cos, sin])
    return total / (len(x) * w.shape[1] ** 0.5)


def rff_mmd2(x: Any, y: Any, w: torch.Tensor) -> float:
    """RFF MMD² between the rows of ``x`` and ``y`` with frequencies ``w``."""
    x, y = as_tensor(x), as_tensor(y)
    w = w.to(device=x.device, dtype=torch.float64)
    return float((rff_mean_embedding(x, w) - rff_mean_embedding(y.to(x.device), w)).square().sum())


class MmdRatio(NamedTuple):
    ratio: float  # MMD²(gen, train) / MMD²(val, train)
    gen: float
    val: float
    sigma: float
    rows: int


def mmd_ratio(
    gen: Any,
    train: Any,
    val: Any,
    *,
    n: int = 16384,
    features: int = 4096,
    sigma: float | None = None,
    seed: int = 0,
    rff_seed: int = RFF_SEED,
    device: Any = None,
) -> MmdRatio:
    """MMDr on equal-size seeded subsamples of ``n`` rows (``seed`` picks the rows)."""
    g, t, v, rows = equal_size(gen, train, val, n, seed, torch.float64, device)
    sigma = median_sigma(t, seed=seed) if sigma is None else float(sigma)
    w = rff_frequencies(t.shape[1], features, sigma, rff_seed)
    w = w.to(t.device)
    ref = rff_mean_embedding(t, w)
    mmd_gen = float((rff_mean_embedding(g, w) - ref).square().sum())
    mmd_val = float((rff_mean_embedding(v, w) - ref).square().sum())
    if mmd_val <= 0.0:
        raise RdmxError("MMD ratio: the validation set is identical to the train subsample (MMD² = 0)")
    return MmdRatio(mmd_gen / mmd_val, mmd_gen, mmd_val, sigma, rows)
