"""MMD^2 estimators with a Gaussian kernel: Nystrom (iRDM default), exact, random Fourier features."""

from __future__ import annotations

import math

import torch

from rdmx.compare.base import Estimator, ReferenceRequest, scale_indices
from rdmx.compare.configs import MMDExactConfig, MMDNystromConfig, MMDRFFConfig
from rdmx.compare.kernels import kernel_sum
from rdmx.errors import RdmxError


class _GaussianMMD(Estimator):
    """Shared bandwidth handling: the reference's sigma times this estimator's scales."""

    def _sigmas(self, ref) -> tuple[list[int], list[float]]:
        if abs(ref.request.sigma_scale - self.config.sigma_scale) > 1e-12:
            raise RdmxError(
                f"{type(self).__name__} wants sigma_scale {self.config.sigma_scale}, the reference was "
                f"built with {ref.request.sigma_scale}; rebuild it with this estimator's request"
            )
        fixed = ref.request.sigma
        if (fixed is None) != (self.config.sigma is None) or (fixed is not None and abs(fixed - self.config.sigma) > 1e-12):
            raise RdmxError(
                f"{type(self).__name__} wants sigma {self.config.sigma or 'by the median heuristic'}, the reference "
                f"was built with {fixed or 'the median heuristic'}; rebuild it with this estimator's request"
            )
        idx = scale_indices(ref, self.config.scales)
        return idx, ref.sigmas(idx)

    def _repulsion(self, gen: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
        """Mean k(g_i, g_j) per scale: V-statistic (diagonal kept) or U-statistic."""
        n = gen.shape[0]
        total = kernel_sum(gen, None, sigmas, block_elems=self.config.block_elems)
        if self.config.statistic == "u":
            if n < 2:
                raise RdmxError("the U-statistic needs at least 2 generated rows")
            return (total - n) / (n * (n - 1))
        return total / (n * n)


class MMDNystrom(_GaussianMMD):
    """L = mean_ij k(g_i, g_j) - 2 mean_i k(g_i, Z) alpha + k_rr, summed over scales."""

    def __init__(self, config: MMDNystromConfig | None = None):
        super().__init__(config or MMDNystromConfig())

    def request(self) -> ReferenceRequest:
        c = self.config
        return ReferenceRequest(
            landmarks=c.landmarks, kmeans_iters=c.kmeans_iters, kmeans_subsample=c.kmeans_subsample,
            sigma_subsample=c.sigma_subsample, sigma_scale=c.sigma_scale, sigma=c.sigma, scales=tuple(c.scales),
            krr_subsample=c.krr_subsample,
        )

    def attraction(self, gen: torch.Tensor, ref, idx: list[int], sigmas: list[float]) -> torch.Tensor:
        """mean_i sum_k k_s(g_i, Z_k) alpha_s[k], per scale (joint-space gen)."""
        z = ref.need("landmarks", "mmd-nystrom").to(gen.dtype)
        alpha = ref.need("alpha", "mmd-nystrom").to(gen.dtype)
        return kernel_sum(gen, z, sigmas, alpha[idx], block_elems=self.config.block_elems) / gen.shape[0]

    def _loss(self, gen, ref, generator):
        idx, sigmas = self._sigmas(ref)
        k_rr = ref.need("k_rr", "mmd-nystrom")[idx].to(gen.dtype)
        per_scale = self._repulsion(gen, sigmas) - 2.0 * self.attraction(gen, ref, idx, sigmas) + k_rr
        return per_scale.sum()


class MMDExact(_GaussianMMD):
    """MMD^2 against a fresh real batch of the same size, drawn from the bank with ``generator``."""

    def __init__(self, config: MMDExactConfig | None = None):
        super().__init__(config or MMDExactConfig())

    def request(self) -> ReferenceRequest:
        c = self.config
        constant = c.real_term == "reference"
        return ReferenceRequest(
            landmarks=0, sigma_subsample=c.sigma_subsample, sigma_scale=c.sigma_scale, sigma=c.sigma,
            scales=tuple(c.scales), bank=c.bank, krr=constant, **({"krr_subsample": c.krr_subsample} if constant else {}),
        )

    def _loss(self, gen, ref, generator):
        idx, sigmas = self._sigmas(ref)
        n = gen.shape[0]
        real = ref.bank_batch(n, generator, like=gen)
        cross = kernel_sum(gen, real, sigmas, block_elems=self.config.block_elems) / (n * n)
        if self.config.real_term == "reference":
            real_term = ref.need("k_rr", "mmd-exact with real_term = 'reference'")[idx].to(gen.dtype)
        else:
            with torch.no_grad():
                real_term = self._repulsion(real, sigmas)
        return (self._repulsion(gen, sigmas) - 2.0 * cross + real_term).sum()


class MMDRFF(_GaussianMMD):
    """|mean_i phi(g_i) - mean_r phi(r)|^2 with phi(x) = sqrt(2/D) cos(x W + b), W ~ N(0, sigma^-2)."""

    def __init__(self, config: MMDRFFConfig | None = None):
        super().__init__(config or MMDRFFConfig())

    def request(self) -> ReferenceRequest:
        c = self.config
        return ReferenceRequest(
            landmarks=0, sigma_subsample=c.sigma_subsample, sigma_scale=c.sigma_scale, sigma=c.sigma,
            scales=tuple(c.scales), rff_features=c.features,
        )

    def _loss(self, gen, ref, generator):
        idx, _ = self._sigmas(ref)
        w = ref.need("rff_weight", "mmd-rff")
        width = w.shape[1] // len(ref.scales)
        if width < self.config.features:
            raise RdmxError(f"the reference has {width} random features per scale, mmd-rff wants {self.config.features}")
        cols = torch.cat([torch.arange(i * width, i * width + self.config.features) for i in idx]).to(w.device)
        w = w[:, cols].to(gen.dtype)
        b = ref.rff_bias[cols].to(gen.dtype)
        # the bundle's mean used sqrt(2 / width); rescale to this estimator's sqrt(2 / features)
        real_mean = ref.need("rff_mean", "mmd-rff")[cols].to(gen.dtype) * math.sqrt(width / self.config.features)
        phi = math.sqrt(2.0 / self.config.features) * torch.cos(gen @ w + b)
        return ((phi.mean(0) - real_mean) ** 2).sum()
