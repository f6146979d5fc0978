"""Gaussian-kernel sums computed in row blocks, with a backward that recomputes each block.

``kernel_sum(x, y, w, sigmas)`` returns, per bandwidth s, sum_ij k_s(x_i, y_j) w_j with
k_s(x, y) = exp(-|x - y|^2 / (2 sigma_s^2)). Only x receives a gradient. With
``symmetric=True`` (y is x) the gradient counts both arguments. No (N, M) matrix is kept
for autograd: memory is one block of ``block_elems`` entries whatever N is.
"""

from __future__ import annotations

import torch


def sq_dists(x: torch.Tensor, y: torch.Tensor, y_sq: torch.Tensor | None = None) -> torch.Tensor:
    """|x_i - y_j|^2 by the expansion, clamped at 0."""
    if y_sq is None:
        y_sq = (y * y).sum(1)
    d2 = torch.addmm(y_sq[None, :], x, y.T, beta=1.0, alpha=-2.0)
    d2.add_((x * x).sum(1)[:, None])
    return d2.clamp_min_(0.0)


def gaussian_gram(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """The dense kernel matrix (for small inputs)."""
    return torch.exp(-sq_dists(x, y) / (2.0 * sigma * sigma))


def _row_blocks(n: int, cols: int, block_elems: int):
    step = max(1, block_elems // max(cols, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


class _KernelSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, w, gammas, symmetric, block_elems):  # noqa: D401 - autograd API
        y_sq = (y * y).sum(1)
        out = torch.zeros(len(gammas), dtype=x.dtype, device=x.device)
        for rows in _row_blocks(x.shape[0], y.shape[0], block_elems):
            d2 = sq_dists(x[rows], y, y_sq)
            for s, gamma in enumerate(gammas):
                k = torch.exp(d2 * -gamma) if len(gammas) > 1 else d2.mul_(-gamma).exp_()
                out[s] += (k @ w[s]).sum() if w is not None else k.sum()
        ctx.save_for_backward(x, y, w)
        ctx.gammas, ctx.symmetric, ctx.block_elems = gammas, symmetric, block_elems
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, y, w = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        y_sq = (y * y).sum(1)
        grad = torch.empty_like(x)
        factor = 2.0 if ctx.symmetric else 1.0
        for rows in _row_blocks(x.shape[0], y.shape[0], ctx.block_elems):
            d2 = sq_dists(x[rows], y, y_sq)
            if len(ctx.gammas) == 1:
                gamma = ctx.gammas[0]
                coef = d2.mul_(-gamma).exp_().mul_(-2.0 * gamma * grad_out[0])
                if w is not None:
                    coef.mul_(w[0][None, :])
            else:
                coef = torch.zeros_like(d2)
                for s, gamma in enumerate(ctx.gammas):
                    k = torch.exp(d2 * -gamma)
                    if w is not None:
                        k.mul_(w[s][None, :])
                    coef.add_(k, alpha=-2.0 * gamma * float(grad_out[s]))
            # d/dx_i of k(x_i, y_j) = -2 gamma (x_i - y_j) k_ij
            grad[rows] = factor * (coef.sum(1, keepdim=True) * x[rows] - coef @ y)
        return grad, None, None, None, None, None


def kernel_sum(
    x: torch.Tensor,
    y: torch.Tensor | None,
    sigmas: list[float] | tuple[float, ...],
    weights: torch.Tensor | None = None,
    *,
    block_elems: int = 1 << 24,
) -> torch.Tensor:
    """Per-bandwidth sums sum_ij k_s(x_i, y_j) w_sj, shape (len(sigmas),).

    ``weights`` is (M,) (shared by every bandwidth) or (len(sigmas), M). ``y=None`` means
    y = x (the repulsion term); the gradient then accounts for x on both sides. y and
    weights are constants."""
    symmetric = y is None
    y = x.detach() if symmetric else y.detach()
    w = None
    if weights is not None:
        w = weights.detach().to(x.dtype)
        w = w.expand(len(sigmas), -1) if w.ndim == 1 else w
        if w.shape != (len(sigmas), y.shape[0]):
            raise ValueError(f"weights must be ({y.shape[0]},) or ({len(sigmas)}, {y.shape[0]}), got {tuple(weights.shape)}")
    gammas = tuple(1.0 / (2.0 * float(s) ** 2) for s in sigmas)
    return _KernelSum.apply(x, y.to(x.dtype), w, gammas, symmetric, int(block_elems))
