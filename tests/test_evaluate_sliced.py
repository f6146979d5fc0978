"""Sliced W2 and the SW ratio against POT, an exact 1-D optimal transport LP and a real-vs-real draw."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.evaluate.sliced import sliced_w2, sliced_w2_to, sw_ratio, unit_directions


def _pair(seed=0, n=300, d=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.standard_t(4, size=(n, d)) * 1.5 + 0.3


def test_matches_pot_with_the_same_projections():
    x, y = _pair()
    theta = unit_directions(6, 200, seed=0).numpy()
    want = ot.sliced_wasserstein_distance(x, y, n_projections=200, p=2, projections=theta)
    assert sliced_w2(x, y, directions=200, seed=0) == pytest.approx(want, rel=1e-12)
    assert sliced_w2(x, y, directions=torch.from_numpy(theta)) == pytest.approx(want, rel=1e-12)
    # float32 projections, float64 accumulation: agrees to float32 round-off
    assert sliced_w2(x, y, directions=200, precision="float32") == pytest.approx(want, rel=1e-5)
    # another seed draws other directions: a different value (the comparison above can fail)
    assert sliced_w2(x, y, directions=200, seed=1) != pytest.approx(want, rel=1e-6)


def test_one_dimension_equals_exact_w2_by_linear_programming():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 1)), rng.exponential(size=(60, 1))
    cost = (x - y.T) ** 2
    w = np.full(60, 1 / 60)
    exact = np.sqrt(ot.emd2(w, w, cost))
    assert sliced_w2(x, y, directions=4) == pytest.approx(exact, rel=1e-10)


def test_directions_are_shared_unit_vectors_and_chunking_is_exact():
    a, b = unit_directions(9, 33, seed=0), unit_directions(9, 33, seed=0)
    assert a.shape == (9, 33) and a.dtype == torch.float64
    torch.testing.assert_close(a.norm(dim=0), torch.ones(33, dtype=torch.float64))
    assert torch.equal(a, b)
    x, y = _pair(2, d=9)
    whole = sliced_w2_to([x, 2 * x], y, directions=33, chunk=1000)
    chunked = sliced_w2_to([x, 2 * x], y, directions=33, chunk=5)
    np.testing.assert_allclose(chunked, whole, rtol=1e-13)
    assert whole[0] == pytest.approx(sliced_w2(x, y, directions=33), rel=1e-13)


def test_unequal_sets_are_rejected_by_the_core_and_subsampled_by_the_ratio():
    x, y = _pair(3)
    with pytest.raises(RdmxError, match="equal-size"):
        sliced_w2(x[:100], y)
    rng = np.random.default_rng(4)
    train, val, gen = rng.normal(size=(900, 6)), rng.normal(size=(500, 6)), rng.normal(size=(700, 6)) + 1
    out = sw_ratio(gen, train, val, n=1000, directions=64)
    assert out.rows == 500
    assert out == sw_ratio(gen, train, val, n=1000, directions=64)  # seeded: reproducible
    assert out.ratio == pytest.approx(out.gen / out.val)
    assert out.ratio > 3.0  # a shifted generator is far from the real floor
    with pytest.raises(RdmxError, match="identical"):
        sw_ratio(val, val, val, directions=8)


def _real(rng, n, d=24):
    """A synthetic 'real' law: a smooth non-Gaussian warp of a 24-D Gaussian."""
    mix = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)
    z = rng.normal(size=(n, d))
    return 3 * np.tanh(z @ mix) + 0.5 * z


def test_real_versus_real_scores_one():
    ratios, worse = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        train, val, fresh = _real(rng, 6000), _real(rng, 2048), _real(rng, 2048)
        ratios.append(sw_ratio(fresh, train, val, n=2048, directions=128).ratio)
        worse.append(sw_ratio(fresh * 1.1, train, val, n=2048, directions=128).ratio)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.1)
    assert all(0.75 < r < 1.3 for r in ratios)
    assert min(worse) > 1.6  # a 10% scale error is far outside the real-data band


def test_subsamples_are_the_same_rows_for_arrays_and_tensors():
    from rdmx.evaluate.features import equal_size

    rng = np.random.default_rng(6)
    gen, train, val = (rng.normal(size=(m, 4)).astype(np.float32) for m in (50, 80, 60))
    from_numpy = equal_size(gen, train, val, n=40, seed=3)
    from_torch = equal_size(*(torch.from_numpy(x) for x in (gen, train, val)), n=40, seed=3)
    assert from_numpy[3] == from_torch[3] == 40
    for a, b in zip(from_numpy[:3], from_torch[:3]):
        assert a.dtype == torch.float64 and torch.equal(a, b)
    # rows are drawn, not the first 40: the train subsample is not a prefix
    assert not torch.equal(from_numpy[1], torch.from_numpy(train[:40]).double())
    # every drawn row is a row of the bank
    bank = {tuple(r) for r in train.astype(np.float64).tolist()}
    assert all(tuple(r) in bank for r in from_numpy[1].tolist())
