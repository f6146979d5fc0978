"""RFF MMD² against the exact Gaussian-kernel MMD² (float64 brute force) and MMDr sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from rdmx.evaluate.rff import median_sigma, mmd_ratio, rff_frequencies, rff_mean_embedding, rff_mmd2


def exact_mmd2(x, y, sigma):
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))  # noqa: E731
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_rff_mmd2_converges_to_exact_gaussian_mmd2():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 5)), rng.normal(size=(100, 5)) * 1.3 + 0.4
    sigma = 2.0
    exact = exact_mmd2(x, y, sigma)
    errors = {}
    for features in (64, 16384):
        errs = [abs(rff_mmd2(x, y, rff_frequencies(5, features, sigma, seed=s)) - exact) for s in range(6)]
        errors[features] = float(np.mean(errs))
    assert errors[16384] < errors[64] / 5  # Monte-Carlo error shrinks like 1/sqrt(D): expect about /16
    assert errors[16384] < 0.02 * exact


def test_feature_map_has_unit_norm_and_chunking_is_exact():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(50, 3)))
    w = rff_frequencies(3, 256, 1.0)
    one = rff_mean_embedding(x[:1], w)
    assert float(one.square().sum()) == pytest.approx(1.0, rel=1e-10)
    torch.testing.assert_close(rff_mean_embedding(x, w, chunk=7), rff_mean_embedding(x, w, chunk=1000))


def test_median_sigma_matches_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(301, 7)) * 3
    assert median_sigma(x, rows=1000) == pytest.approx(np.sqrt(np.median(pdist(x, "sqeuclidean"))), rel=1e-10)


def test_mmd_ratio_of_a_fresh_real_draw_is_near_one():
    """Real vs real MMD² values are noisy (degenerate U-statistic noise): MMD²(fresh, train) and
    MMD²(val, train) have the same law, so their means over repeated draws agree."""
    real = lambda rng, n: rng.normal(size=(n, 8)) * np.linspace(0.5, 2, 8)  # noqa: E731
    gen, val_, shifted = [], [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        train, val = real(rng, 3000), real(rng, 1000)
        out = mmd_ratio(real(rng, 1000), train, val, n=1000, features=512)
        assert out.ratio == pytest.approx(out.gen / out.val)
        gen.append(out.gen)
        val_.append(out.val)
        if seed < 2:
            shifted.append(mmd_ratio(real(rng, 1000) + 0.5, train, val, n=1000, features=512).ratio)
    assert np.mean(gen) / np.mean(val_) == pytest.approx(1.0, abs=0.25)
    assert min(shifted) > 10
