"""Frechet distance, sliced Wasserstein and the drifting field against independent references."""

import numpy as np
import ot
import pytest
import torch
from scipy.linalg import sqrtm

from rdmx.compare.base import ReferenceRequest, draw_rows
from rdmx.compare.configs import DriftingConfig, FDConfig, SWConfig
from rdmx.compare.drifting import Drifting
from rdmx.compare.frechet import FrechetDistance
from rdmx.compare.sliced import SlicedWasserstein, unit_directions
from rdmx.reference.bundle import build_reference


def real(n=120, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) @ torch.randn(d, d, generator=gen) + 1.0


def make_ref(x, **req):
    def chunks():
        for i in range(0, len(x), 50):
            yield x[i : i + 50], None

    return build_reference(chunks, ReferenceRequest(landmarks=0, **req), encoder_fingerprint="e", data_fingerprint="d")


# ------------------------------------------------------------------------------------ fd
def test_fd_equals_scipy_sqrtm_formula():
    x = real()
    ref = make_ref(x, moments=True)
    g = (real(80, seed=1) * 0.7 + 0.2).double()
    mu_r, cov_r = x.double().numpy().mean(0), np.cov(x.double().numpy(), rowvar=False)
    mu_g, cov_g = g.numpy().mean(0), np.cov(g.numpy(), rowvar=False)
    expected = ((mu_g - mu_r) ** 2).sum() + np.trace(cov_g + cov_r - 2 * sqrtm(cov_g @ cov_r).real)
    got = FrechetDistance().loss(g, ref)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    assert float(FrechetDistance().loss(x.double(), ref)) == pytest.approx(0.0, abs=1e-9)
    assert got.dtype == torch.float64 and FrechetDistance().loss(g.float(), ref).dtype == torch.float32


def test_fd_gradcheck():
    ref = make_ref(real(60, d=3), moments=True)
    g = (real(10, d=3, seed=2) * 0.5).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: FrechetDistance(FDConfig(eps=0.0)).loss(a, ref), (g,))


def test_fd_gradient_is_finite_when_the_batch_is_rank_deficient():
    ref = make_ref(real(60, d=6), moments=True)
    g = real(3, d=6, seed=3).requires_grad_()  # covariance of rank 2 in 6 dims
    FrechetDistance().loss(g, ref).backward()
    assert torch.isfinite(g.grad).all()


# ------------------------------------------------------------------------------------ sw
def test_sw_in_one_dimension_is_the_exact_w2():
    x = real(100, d=1)
    ref = make_ref(x, bank=100)
    g = real(100, d=1, seed=4).double() * 2
    est = SlicedWasserstein(SWConfig(projections=3, bank=100))
    got = est.loss(g, ref, generator=torch.Generator().manual_seed(0))
    # 1-D: every unit direction is +-1; W2^2 between equal-size samples pairs sorted values
    expected = np.mean((np.sort(g.numpy()[:, 0]) - np.sort(x.double().numpy()[:, 0])) ** 2)
    assert float(got) == pytest.approx(expected, rel=1e-10)
    est_root = SlicedWasserstein(SWConfig(projections=3, bank=100, squared=False))
    assert float(est_root.loss(g, ref, generator=torch.Generator().manual_seed(0))) == pytest.approx(np.sqrt(expected))


def test_sw_equals_pot_with_the_same_projections():
    x = real(200, d=5)
    ref = make_ref(x, bank=200)
    g = real(64, d=5, seed=5).double()
    est = SlicedWasserstein(SWConfig(projections=50, bank=200, squared=False))
    gen = torch.Generator().manual_seed(11)
    got = est.loss(g, ref, generator=gen)
    gen = torch.Generator().manual_seed(11)
    batch = ref.bank[draw_rows(200, 64, gen)].double().numpy()
    theta = unit_directions(5, 50, gen).numpy()
    expected = ot.sliced_wasserstein_distance(g.numpy(), batch, projections=theta, p=2)
    assert float(got) == pytest.approx(float(expected), rel=1e-10)


def test_sw_projections_are_redrawn_and_gradcheck():
    x = real(200, d=5)
    ref = make_ref(x, bank=200)
    g = real(8, d=5, seed=6).double().requires_grad_()
    est = SlicedWasserstein(SWConfig(projections=4, bank=200))
    gen = torch.Generator().manual_seed(0)
    assert float(est.loss(g, ref, generator=gen).detach()) != float(est.loss(g, ref, generator=gen).detach())
    assert torch.autograd.gradcheck(lambda a: est.loss(a, ref, generator=torch.Generator().manual_seed(1)), (g,))


# ------------------------------------------------------------------------------ drifting
def loop_field(x, pos, dn, temp, floor=1e-6):
    """One temperature's field written entry by entry in float64 (Deng et al.'s reference rule):
    targets [x | pos], doubly normalised affinities floored at sqrt(floor), self pairs masked by
    their +100 distance (not removed)."""
    n, p = len(x), len(pos)
    logits = -dn / temp
    row = np.exp(logits - logits.max(1, keepdims=True))
    row /= row.sum(1, keepdims=True)
    col = np.exp(logits - logits.max(0, keepdims=True))
    col /= col.sum(0, keepdims=True)
    a = np.sqrt(np.maximum(row * col, floor))
    v = np.zeros_like(x)
    for i in range(n):
        s_neg, s_pos = a[i, :n].sum(), a[i, n:].sum()
        for j in range(p):
            v[i] += a[i, n + j] * s_neg * (pos[j] - x[i])  # attraction, weighted by the repulsion mass
        for k in range(n):
            v[i] -= a[i, k] * s_pos * (x[k] - x[i])  # repulsion, weighted by the attraction mass
    return v


def reference_drift(x, pos, temps):
    n, c = x.shape
    targets = np.concatenate([x, pos])
    d = np.array([[np.linalg.norm(x[i] - targets[j]) for j in range(len(targets))] for i in range(n)])
    mean = d.mean()  # self-distances (zeros) included
    scale = max(mean / np.sqrt(c), 1e-3)
    dn = d / max(mean, 1e-3)
    for i in range(n):
        dn[i, i] += 100.0
    xs, ps = x / scale, pos / scale
    total = np.zeros_like(xs)
    for t in temps:
        v = loop_field(xs, ps, dn, t)
        total += v / np.sqrt((v**2).mean())
    return scale, total


def test_drifting_value_and_gradient_follow_the_field():
    x = real(300, d=3)
    ref = make_ref(x, bank=300)
    est = Drifting(DriftingConfig(temperatures=[0.05, 0.2], bank=300, positives=12))
    g = real(9, d=3, seed=7).double().requires_grad_()
    loss = est.loss(g, ref, generator=torch.Generator().manual_seed(3))
    pos = ref.bank[draw_rows(300, 12, torch.Generator().manual_seed(3))].double().numpy()
    scale, v = reference_drift(g.detach().numpy(), pos, [0.05, 0.2])
    assert float(loss.detach()) == pytest.approx((v**2).mean(), rel=1e-9)
    loss.backward()
    np.testing.assert_allclose(g.grad.numpy(), -2 * v / (scale * v.size), rtol=1e-9, atol=1e-14)
    assert est.self_normalise is False


def test_drift_points_from_generated_towards_real():
    x = real(200, d=2) * 0.1
    ref = make_ref(x, bank=200)
    est = Drifting(DriftingConfig(temperatures=[0.2], bank=200))
    g = (real(50, d=2, seed=8) * 0.1 + torch.tensor([3.0, 0.0])).double()
    _, v = est.field(g, ref.bank.double())
    towards = x.double().mean(0) - g.mean(0)
    assert float((v.mean(0) @ towards)) > 0.9 * float(v.mean(0).norm() * towards.norm())
