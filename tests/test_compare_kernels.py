"""Blocked Gaussian kernel sums against dense float64 brute force (scipy cdist)."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from rdmx.compare.kernels import kernel_sum


def brute_sum(x, y, sigmas, w=None):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    d2 = cdist(x, y, "sqeuclidean")
    return np.array([(np.exp(-d2 / (2 * s * s)) @ w).sum() for s in sigmas])


def brute_self_grad(x, sigma):
    """d/dx_i sum_jk k(x_j, x_k) = sum_j 2 k_ij (x_j - x_i) / sigma^2, written per pair."""
    n = len(x)
    g = np.zeros_like(x)
    for i in range(n):
        for j in range(n):
            k = np.exp(-np.sum((x[i] - x[j]) ** 2) / (2 * sigma**2))
            g[i] += 2 * k * (x[j] - x[i]) / sigma**2
    return g


@pytest.mark.parametrize("block_elems", [1, 7, 1 << 20])
def test_symmetric_sum_value_and_grad_match_dense(block_elems):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(13, 5, dtype=torch.float64, generator=gen).requires_grad_()
    out = kernel_sum(x, None, [0.7, 2.0], block_elems=block_elems)
    np.testing.assert_allclose(out.detach().numpy(), brute_sum(x.detach(), x.detach(), [0.7, 2.0]), rtol=1e-12)
    out[0].backward()
    np.testing.assert_allclose(x.grad.numpy(), brute_self_grad(x.detach().numpy(), 0.7), rtol=1e-10, atol=1e-12)


def test_blocked_float32_equals_unblocked_dense_autograd():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=gen).requires_grad_()
    y = torch.randn(40, 8, generator=gen)
    w = torch.randn(40, generator=gen)
    blocked = kernel_sum(x, y, [1.5, 3.0], w, block_elems=100)
    grad_blocked = torch.autograd.grad(blocked.sum(), x)[0]
    x2 = x.detach().clone().requires_grad_()
    dense = sum((torch.exp(-torch.cdist(x2, y) ** 2 / (2 * s * s)) @ w).sum() for s in (1.5, 3.0))
    grad_dense = torch.autograd.grad(dense, x2)[0]
    assert torch.allclose(blocked.sum(), dense, rtol=1e-5)
    assert torch.allclose(grad_blocked, grad_dense, rtol=1e-4, atol=1e-6)


def test_cross_weighted_value():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(9, 4, dtype=torch.float64, generator=gen), torch.randn(6, 4, dtype=torch.float64, generator=gen)
    w = torch.randn(6, dtype=torch.float64, generator=gen)
    out = kernel_sum(x, y, [0.5, 1.0, 4.0], w, block_elems=5)
    np.testing.assert_allclose(out.numpy(), brute_sum(x, y, [0.5, 1.0, 4.0], w), rtol=1e-12)


def test_gradcheck_symmetric_and_cross():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen).requires_grad_()
    y = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    w = torch.randn(5, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda a: kernel_sum(a, None, [0.8, 1.7], block_elems=4), (x,))
    assert torch.autograd.gradcheck(lambda a: kernel_sum(a, y, [0.8, 1.7], w, block_elems=4), (x,))


def test_per_scale_weights():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 3, dtype=torch.float64, generator=gen).requires_grad_()
    y = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    w = torch.randn(2, 5, dtype=torch.float64, generator=gen)
    out = kernel_sum(x, y, [0.6, 2.5], w, block_elems=6)
    expected = [brute_sum(x.detach(), y, [s], w[i])[0] for i, s in enumerate([0.6, 2.5])]
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda a: kernel_sum(a, y, [0.6, 2.5], w, block_elems=6), (x,))
    with pytest.raises(ValueError, match="weights"):
        kernel_sum(x, y, [0.6, 2.5], torch.ones(3, 5))
