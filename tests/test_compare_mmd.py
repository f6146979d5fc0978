"""MMD estimators (Nystrom, exact, RFF) against float64 brute force written here."""

import numpy as np
import pytest
import torch
from scipy.linalg import eigh
from scipy.spatial.distance import cdist

from rdmx.compare.base import ReferenceRequest, draw_rows
from rdmx.compare.configs import MMDExactConfig, MMDNystromConfig, MMDRFFConfig
from rdmx.compare.mmd import MMDExact, MMDNystrom, MMDRFF
from rdmx.errors import RdmxError
from rdmx.reference.bundle import build_reference


def gauss(a, b, sig):
    return np.exp(-cdist(np.asarray(a, np.float64), np.asarray(b, np.float64), "sqeuclidean") / (2 * sig * sig))


def real(n=96, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) * torch.linspace(0.5, 1.5, d)


def make_ref(x, **req):
    request = ReferenceRequest(**{"kmeans_subsample": 10_000, "krr_subsample": 10_000, **req})

    def chunks():
        for i in range(0, len(x), 32):
            yield x[i : i + 32], None

    return build_reference(chunks, request, encoder_fingerprint="e", data_fingerprint="d")


def exact_mmd2(g, r, sig):
    return gauss(g, g, sig).mean() - 2 * gauss(g, r, sig).mean() + gauss(r, r, sig).mean()


def test_nystrom_value_and_gradient_match_brute_force():
    x = real()
    ref = make_ref(x, landmarks=16, scales=(0.5, 1.0))
    est = MMDNystrom(MMDNystromConfig(landmarks=16, scales=[0.5, 1.0], block_elems=50))
    g = (real(40, seed=1) * 1.2 + 0.3).double()
    z, value, grad = ref.landmarks.double().numpy(), 0.0, np.zeros(g.shape)
    gn = g.numpy()
    for s, scale in enumerate(ref.scales):
        sig, alpha = ref.sigma * scale, ref.alpha[s].double().numpy()
        k_gg, k_gz = gauss(gn, gn, sig), gauss(gn, z, sig)
        value += k_gg.mean() - 2 * (k_gz @ alpha).mean() + float(ref.k_rr[s])
        # analytic gradient, pair by pair
        n = len(gn)
        grad += (2 / n**2) * ((k_gg[:, :, None] * (gn[None, :, :] - gn[:, None, :])).sum(1)) / sig**2
        grad -= (2 / n) * ((k_gz * alpha)[:, :, None] * (z[None] - gn[:, None, :])).sum(1) / sig**2
    gv = g.clone().requires_grad_()
    out = est.loss(gv, ref)
    out.backward()
    assert float(out.detach()) == pytest.approx(value, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(gv.grad.numpy(), grad, rtol=1e-8, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: est.loss(a, ref), (g[:7].clone().requires_grad_(),))


def test_nystrom_float32_path_matches_float64():
    x = real()
    ref = make_ref(x, landmarks=16)
    est = MMDNystrom(MMDNystromConfig(landmarks=16))
    g = real(64, seed=2) + 0.5
    assert float(est.loss(g, ref)) == pytest.approx(float(est.loss(g.double(), ref)), rel=1e-4)


def test_u_statistic_drops_the_diagonal():
    x = real()
    ref = make_ref(x, landmarks=8)
    g = real(20, seed=3).double()
    v = MMDNystrom(MMDNystromConfig(landmarks=8)).loss(g, ref)
    u = MMDNystrom(MMDNystromConfig(landmarks=8, statistic="u")).loss(g, ref)
    k = gauss(g, g, ref.sigma)
    assert float(v - u) == pytest.approx(k.mean() - (k.sum() - 20) / (20 * 19), rel=1e-10)


def test_alpha_form_equals_explicit_feature_map():
    """mean_i k(g_i, Z) alpha == mean_i phi(g_i) . mean_r phi(r), phi(x) = K_xZ (K_ZZ + eps I)^(-1/2)."""
    x = real()
    ref = make_ref(x, landmarks=24)
    g = real(30, seed=4).double()
    sig, z = ref.sigma, ref.landmarks.double().numpy()
    vals, vecs = eigh(gauss(z, z, sig) + 1e-6 * np.eye(24))
    inv_root = (vecs / np.sqrt(vals)) @ vecs.T
    phi_g, phi_r = gauss(g, z, sig) @ inv_root, gauss(x, z, sig) @ inv_root
    explicit = (phi_g @ phi_r.mean(0)).mean()
    est = MMDNystrom(MMDNystromConfig(landmarks=24))
    got = est.attraction(g, ref, [0], [sig])
    assert float(got[0]) == pytest.approx(explicit, rel=1e-5)


def test_nystrom_attraction_error_falls_with_m_and_is_exact_at_m_equals_n():
    x = real(64)
    g = real(50, seed=5).double()
    errors = []
    for m in (2, 8, 32, 64):
        ref = make_ref(x, landmarks=m)
        exact = gauss(g, x, ref.sigma).mean()
        approx = float(MMDNystrom(MMDNystromConfig(landmarks=m)).attraction(g, ref, [0], [ref.sigma])[0])
        errors.append(abs(approx - exact) / exact)
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-5
    # and the whole loss at m = n equals the exact V-statistic MMD^2 to the full real set
    ref = make_ref(x, landmarks=64)
    loss = float(MMDNystrom(MMDNystromConfig(landmarks=64)).loss(g, ref))
    assert loss == pytest.approx(exact_mmd2(g, x, ref.sigma), rel=1e-4)


def test_nystrom_refuses_a_reference_without_its_scale_or_sigma_scale():
    ref = make_ref(real(), landmarks=4)
    with pytest.raises(RdmxError, match="scales"):
        MMDNystrom(MMDNystromConfig(scales=[2.0])).loss(real(4), ref)
    with pytest.raises(RdmxError, match="sigma_scale"):
        MMDNystrom(MMDNystromConfig(sigma_scale=0.5)).loss(real(4), ref)
    with pytest.raises(RdmxError, match="shape"):
        MMDNystrom().loss(torch.zeros(4, 3), ref)


def test_exact_mmd_uses_a_fresh_seeded_real_batch():
    x = real(200)
    ref = make_ref(x, landmarks=0, bank=150, scales=(1.0, 2.0))
    est = MMDExact(MMDExactConfig(bank=150, scales=[1.0, 2.0], block_elems=64))
    g = real(40, seed=6).double()
    idx = draw_rows(150, 40, torch.Generator().manual_seed(7))
    batch = ref.bank[idx].double().numpy()
    expected = sum(exact_mmd2(g, batch, ref.sigma * s) for s in (1.0, 2.0))
    got = est.loss(g, ref, generator=torch.Generator().manual_seed(7))
    assert float(got) == pytest.approx(expected, rel=1e-10)
    other = est.loss(g, ref, generator=torch.Generator().manual_seed(8))
    assert float(other) != pytest.approx(expected, rel=1e-6)
    assert torch.autograd.gradcheck(
        lambda a: est.loss(a, ref, generator=torch.Generator().manual_seed(7)), (g[:6].clone().requires_grad_(),)
    )


def test_exact_mmd_with_the_releases_constant_real_term():
    """real_term = 'reference': the reference's k_rr (float64 over its first 120 rows here) replaces the drawn
    batch's own kernel mean; the value moves, the gradient does not (neither term depends on g)."""
    x = real(200)
    cfg = MMDExactConfig(bank=150, scales=[1.0, 2.0], real_term="reference", krr_subsample=120)
    est = MMDExact(cfg)
    request = est.request()
    assert request.krr and request.landmarks == 0 and request.to_dict()["krr"] is True
    ref = make_ref(x, **{k: v for k, v in request.to_dict().items() if k in ("bank", "krr", "scales")},
                   landmarks=0, krr_subsample=120, krr_rows="first")
    g = real(40, seed=6).double()
    idx = draw_rows(150, 40, torch.Generator().manual_seed(7))
    batch = ref.bank[idx].double().numpy()
    head = x[:120].double().numpy()
    expected = sum(gauss(g, g, ref.sigma * s).mean() - 2 * gauss(g, batch, ref.sigma * s).mean()
                   + gauss(head, head, ref.sigma * s).mean() for s in (1.0, 2.0))
    got = est.loss(g, ref, generator=torch.Generator().manual_seed(7))
    assert float(got) == pytest.approx(expected, rel=1e-10)
    sampled = MMDExact(MMDExactConfig(bank=150, scales=[1.0, 2.0]))
    a = g.clone().requires_grad_()
    b = g.clone().requires_grad_()
    est.loss(a, ref, generator=torch.Generator().manual_seed(7)).backward()
    sample_value = sampled.loss(b, ref, generator=torch.Generator().manual_seed(7))
    sample_value.backward()
    assert sample_value.item() != pytest.approx(got.item(), rel=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=0)
    without = make_ref(x, landmarks=0, bank=150, scales=(1.0, 2.0))  # a reference built without k_rr
    with pytest.raises(RdmxError, match="mmd-exact with real_term = 'reference' needs 'k_rr'"):
        est.loss(g, without, generator=torch.Generator().manual_seed(7))


def test_rff_value_gradient_and_kernel_approximation():
    x = real(300)
    ref = make_ref(x, landmarks=0, rff_features=4096)
    g = (real(60, seed=9) + 0.7).double()
    est = MMDRFF(MMDRFFConfig(features=4096))
    w, b = ref.rff_weight.double().numpy(), ref.rff_bias.double().numpy()
    feat = lambda a: np.sqrt(2 / 4096) * np.cos(np.asarray(a, np.float64) @ w + b)  # noqa: E731
    expected = ((feat(g).mean(0) - feat(x).mean(0)) ** 2).sum()
    assert float(est.loss(g, ref)) == pytest.approx(expected, rel=1e-6)
    # D = 4096 random features approximate the Gaussian-kernel MMD^2
    assert float(est.loss(g, ref)) == pytest.approx(exact_mmd2(g, x, ref.sigma), rel=0.1)
    small = MMDRFF(MMDRFFConfig(features=16))
    w16, b16 = w[:, :16], b[:16]
    f16 = lambda a: np.sqrt(2 / 16) * np.cos(np.asarray(a, np.float64) @ w16 + b16)  # noqa: E731
    assert float(small.loss(g, ref)) == pytest.approx(((f16(g).mean(0) - f16(x).mean(0)) ** 2).sum(), rel=1e-5)
    assert torch.autograd.gradcheck(lambda a: small.loss(a, ref), (g[:5].clone().requires_grad_(),))
