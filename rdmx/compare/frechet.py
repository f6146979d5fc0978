"""Differentiable Frechet distance to the frozen real mean and covariance."""

from __future__ import annotations

import torch

from rdmx.compare.base import Estimator, ReferenceRequest
from rdmx.compare.configs import FDConfig
from rdmx.errors import RdmxError


def psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix by eigh (negative round-off clamped to 0)."""
    vals, vecs = torch.linalg.eigh((cov + cov.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


class FrechetDistance(Estimator):
    """|mu_g - mu_r|^2 + tr S_g + tr S_r - 2 tr sqrt(S_r^1/2 S_g S_r^1/2), in float64.

    The trace of the square root is the sum of sqrt(eigenvalues) of a symmetric matrix, whose
    gradient (through eigvalsh) needs no eigenvector derivatives and stays finite."""

    def __init__(self, config: FDConfig | None = None):
        super().__init__(config or FDConfig())

    def request(self) -> ReferenceRequest:
        return ReferenceRequest(landmarks=0, moments=True)

    def _loss(self, gen, ref, generator):
        if gen.shape[0] < 2:
            raise RdmxError("the Frechet distance needs at least 2 generated rows")
        mean_r = ref.need("mean", "fd").to(device=gen.device, dtype=torch.float64)
        cov_r = ref.need("cov", "fd").to(device=gen.device, dtype=torch.float64)
        root = ref.cache.get("fd_sqrt_cov")
        if root is None or root.device != gen.device:
            root = ref.cache["fd_sqrt_cov"] = psd_sqrt(cov_r)
        g = gen.double()
        mean_g = g.mean(0)
        centred = g - mean_g
        cov_g = centred.T @ centred / (g.shape[0] - 1)
        inner = root @ cov_g @ root
        eig = torch.linalg.eigvalsh((inner + inner.T) / 2)
        trace_sqrt = eig.clamp_min(self.config.eps).sqrt().sum()
        fd = ((mean_g - mean_r) ** 2).sum() + cov_g.diagonal().sum() + cov_r.diagonal().sum() - 2 * trace_sqrt
        return fd.to(gen.dtype)
