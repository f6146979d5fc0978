"""Sliced Wasserstein-2 against a real bank batch, random unit directions redrawn every call."""

from __future__ import annotations

import torch

from rdmx.compare.base import Estimator, ReferenceRequest
from rdmx.compare.configs import SWConfig


def unit_directions(dim: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """(dim, count) directions uniform on the sphere (float64, CPU)."""
    theta = torch.randn(dim, count, dtype=torch.float64, generator=generator)
    return theta / theta.norm(dim=0, keepdim=True)


def sliced_w2_squared(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """mean over directions of the exact 1-D W2^2 between equal-size samples x and y."""
    if x.shape[0] != y.shape[0]:
        raise ValueError("sliced_w2_squared compares samples of equal size")
    px = torch.sort(x @ theta, dim=0).values
    py = torch.sort(y @ theta, dim=0).values
    return ((px - py) ** 2).mean()


class SlicedWasserstein(Estimator):
    """SW_2^2 (or SW_2) of the generated batch against a same-size real bank batch."""

    def __init__(self, config: SWConfig | None = None):
        super().__init__(config or SWConfig())

    def request(self) -> ReferenceRequest:
        return ReferenceRequest(landmarks=0, bank=self.config.bank)

    def _loss(self, gen, ref, generator):
        real = ref.bank_batch(gen.shape[0], generator, like=gen)
        theta = unit_directions(gen.shape[1], self.config.projections, generator).to(gen.device, gen.dtype)
        sw2 = sliced_w2_squared(gen, real, theta)
        return sw2 if self.config.squared else sw2.clamp_min(0).sqrt()
