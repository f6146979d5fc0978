"""Fréchet distance in float64 against scipy's sqrtm formula and the diagonal-Gaussian closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from rdmx.evaluate.frechet import frechet_distance, frechet_from_stats, mean_cov, sqrtm_psd


def scipy_fd(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))


def test_matches_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(20, 20))
    x = rng.normal(size=(500, 20)) @ mix
    y = rng.normal(size=(400, 20)) @ (mix + 0.3 * rng.normal(size=(20, 20))) + 0.5
    assert frechet_distance(x, y) == pytest.approx(scipy_fd(x, y), rel=1e-6)
    mu, cov = mean_cov(x)
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)


def test_diagonal_gaussians_closed_form():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    m1, m2 = np.zeros(3), np.array([1.0, -2.0, 0.0])
    want = 5.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    t = lambda v: torch.from_numpy(v)  # noqa: E731
    got = frechet_from_stats(t(m1), t(np.diag(a)), t(m2), t(np.diag(b)))
    assert got == pytest.approx(want, rel=1e-12)


def test_sqrtm_squares_back_and_identical_sets_score_zero():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(8, 8))
    c = torch.from_numpy(m @ m.T)
    s = sqrtm_psd(c)
    torch.testing.assert_close(s @ s, c, rtol=1e-10, atol=1e-10)
    x = rng.normal(size=(200, 8))
    assert abs(frechet_distance(x, x)) < 1e-9


def test_frechet_to_one_reference_matches_scipy_for_every_set_and_either_order():
    from rdmx.evaluate.frechet import frechet_to

    rng = np.random.default_rng(2)
    mix = rng.normal(size=(12, 12))
    ref = rng.normal(size=(600, 12)) @ mix
    sets = [rng.normal(size=(300, 12)) @ (mix + s * rng.normal(size=(12, 12))) + s for s in (0.1, 0.5, 1.0)]
    got = frechet_to(ref, sets)
    assert got == pytest.approx([scipy_fd(x, ref) for x in sets], rel=1e-8)
    assert got == pytest.approx([frechet_distance(ref, x) for x in sets], rel=1e-10)  # FD is symmetric
    assert got[0] < got[1] < got[2]
