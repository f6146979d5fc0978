"""Fréchet distance between Gaussian fits of two feature sets, in float64.

FD = ‖μ₁ − μ₂‖² + tr C₁ + tr C₂ − 2 tr (C₁^½ C₂ C₁^½)^½. The last trace equals scipy's
tr sqrtm(C₁ C₂) (the matrices are similar) but is computed from symmetric eigendecompositions,
which are stable and never produce the complex round-off of a general sqrtm.
"""

from __future__ import annotations

from typing import Any

import torch

from rdmx.evaluate.features import as_tensor


def mean_cov(x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (ddof = 1) of the rows of ``x``, in float64."""
    x = as_tensor(x, torch.float64)
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def sqrtm_psd(c: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
    vals, vecs = torch.linalg.eigh((c + c.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_from_stats(mu1: torch.Tensor, c1: torch.Tensor, mu2: torch.Tensor, c2: torch.Tensor) -> float:
    """FD between N(μ₁, C₁) and N(μ₂, C₂)."""
    mu1, c1 = mu1.to(torch.float64), c1.to(torch.float64)
    return _frechet(mu1, c1, *_fit(mu2, c2))


def _fit(mu: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = c.to(torch.float64)
    return mu.to(torch.float64), c, sqrtm_psd(c)


def _frechet(mu1: torch.Tensor, c1: torch.Tensor, mu2: torch.Tensor, c2: torch.Tensor, s2: torch.Tensor) -> float:
    middle = s2 @ c1 @ s2  # similar to C₁C₂: tr (C₂^½ C₁ C₂^½)^½ = tr (C₁^½ C₂ C₁^½)^½
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + torch.trace(c1) + torch.trace(c2) - 2 * cross)


def frechet_to(reference: Any, sets: list[Any]) -> list[float]:
    """FD between each of ``sets`` and ``reference`` (feature sets), fitting the reference and
    taking its square root once (an evaluation compares generated and validation rows to train)."""
    ref = _fit(*mean_cov(reference))
    return [_frechet(*mean_cov(x), *ref) for x in sets]


def frechet_distance(x: Any, y: Any) -> float:
    """FD between the Gaussian fits of feature sets ``x`` and ``y``."""
    return frechet_to(y, [x])[0]
