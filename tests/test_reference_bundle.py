"""Reference bundles: streamed statistics against in-memory float64 references, k-means,
the reservoir, save/load round trip and fingerprint refusal, floors."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from rdmx.compare.base import ReferenceRequest
from rdmx.compare.configs import JointSpec, MMDNystromConfig
from rdmx.compare.mmd import MMDNystrom
from rdmx.errors import BundleMismatchError, RdmxError
from rdmx.files import IntegrityError
from rdmx.reference.bundle import _Reservoir, build_reference, load_reference, median_sigma, save_reference
from rdmx.reference.floors import estimate_floor
from rdmx.reference.kmeans import kmeans, kmeans_objective


def data(n=500, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) * torch.linspace(0.5, 2.0, d) + 1.0


def stream(x, cond=None, size=64):
    def chunks():
        for i in range(0, len(x), size):
            yield x[i : i + size], None if cond is None else cond[i : i + size]

    return chunks


def build(x, cond=None, joint=None, **req):
    request = ReferenceRequest(**{"landmarks": 32, "kmeans_subsample": 10_000, "krr_subsample": 10_000, **req})
    return build_reference(stream(x, cond), request, joint=joint, encoder_fingerprint="enc", data_fingerprint="dat")


def test_streamed_statistics_equal_in_memory_float64():
    x = data()
    ref = build(x, rff_features=16, moments=True, scales=(0.5, 1.0))
    x64 = x.double().numpy()
    # sigma: sqrt of the median pairwise squared distance (scipy), the subsample is every row here
    assert ref.sigma == pytest.approx(np.sqrt(np.median(pdist(x64, "sqeuclidean"))), rel=1e-12)
    z = ref.landmarks.double().numpy()
    for s, scale in enumerate(ref.scales):
        sig = ref.sigma * scale
        mu = np.exp(-cdist(z, x64, "sqeuclidean") / (2 * sig**2)).mean(1)
        k_zz = np.exp(-cdist(z, z, "sqeuclidean") / (2 * sig**2)) + 1e-6 * np.eye(len(z))
        np.testing.assert_allclose(ref.alpha[s].double().numpy(), np.linalg.solve(k_zz, mu), rtol=1e-5, atol=1e-6)
        k_rr = np.exp(-cdist(x64, x64, "sqeuclidean") / (2 * sig**2)).mean()
        assert float(ref.k_rr[s]) == pytest.approx(k_rr, rel=1e-12)
    np.testing.assert_allclose(ref.mean.numpy(), x64.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.cov.numpy(), np.cov(x64, rowvar=False), rtol=1e-10, atol=1e-12)
    w, b = ref.rff_weight.double().numpy(), ref.rff_bias.double().numpy()
    rff = np.sqrt(2 / 16) * np.cos(x64 @ w + b)
    np.testing.assert_allclose(ref.rff_mean.numpy(), rff.mean(0), rtol=1e-9, atol=1e-12)
    # RFF weights are N(0, sigma_s^-2) per scale block
    assert ref.rff_weight.shape == (6, 32)


def test_chunking_does_not_change_the_reference():
    x = data(300)
    request = ReferenceRequest(landmarks=16, kmeans_subsample=10_000, krr_subsample=10_000, moments=True)
    a = build_reference(stream(x, size=300), request, encoder_fingerprint="e", data_fingerprint="d")
    b = build_reference(stream(x, size=17), request, encoder_fingerprint="e", data_fingerprint="d")
    np.testing.assert_allclose(a.mean.numpy(), b.mean.numpy(), rtol=1e-12)
    assert torch.allclose(a.alpha, b.alpha, rtol=1e-5, atol=1e-7)


def test_reservoir_is_a_uniform_subsample():
    n, k, trials = 40, 10, 400
    counts = np.zeros(n)
    x = torch.arange(n, dtype=torch.float32)[:, None]
    for t in range(trials):
        res = _Reservoir(k, torch.Generator().manual_seed(t))
        for i in range(0, n, 7):
            res.add(x[i : i + 7], None)
        picked = res.feats[:, 0].long().numpy()
        assert len(set(picked)) == k
        counts[picked] += 1
    # every row is kept with probability k / n: binomial(400, 0.25), sd ~ 8.7
    expected = trials * k / n
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(trials * k / n * (1 - k / n)))
    # chi-square against uniform: 39 dof, 99.9% quantile ~ 72.1
    assert ((counts - expected) ** 2 / expected).sum() < 72.1


def test_subsamples_are_drawn_from_the_whole_stream():
    x = data(400)
    ref = build(x, landmarks=0, sigma_subsample=50, bank=50)
    rows = {tuple(r) for r in x.numpy().round(6)}
    assert all(tuple(r) in rows for r in ref.bank.numpy().round(6))
    first_chunk = {tuple(r) for r in x[:64].numpy().round(6)}
    assert sum(tuple(r) in first_chunk for r in ref.bank.numpy().round(6)) < 30


def test_median_sigma_matches_scipy():
    x = data(123, 5)
    assert median_sigma(x) == pytest.approx(np.sqrt(np.median(pdist(x.double().numpy(), "sqeuclidean"))), rel=1e-12)


def test_kmeans_objective_decreases_and_edge_cases():
    x = data(400, 4).double()
    history = []
    centers = kmeans(x, 12, iters=20, seed=0, history=history)
    assert len(history) == 21
    assert all(b <= a + 1e-12 for a, b in zip(history, history[1:]))
    assert history[-1] < 0.8 * history[0]
    # each center is the mean of its cluster (Lloyd fixed point after convergence)
    labels = torch.cdist(x, centers).argmin(1)
    for c in range(12):
        if (labels == c).any():
            assert torch.allclose(centers[c], x[labels == c].mean(0), atol=1e-2 * float(x.std()))
    assert torch.equal(kmeans(x[:10], 10), x[:10])
    rows = kmeans(x, 5, iters=0, seed=3)
    assert all(any(torch.equal(r, xr) for xr in x) for r in rows)


def test_kmeans_reseeds_empty_clusters():
    # three points, each 4 times: a seed whose random init repeats a point leaves a cluster
    # empty; only reseeding it from random rows can reach the zero-cost solution
    x = torch.tensor([[0.0, 0.0], [5.0, 0.0], [9.0, 0.0]]).repeat(4, 1).double()
    for seed in (0, 2):
        assert len(set(kmeans(x, 3, iters=0, seed=seed)[:, 0].tolist())) < 3
        assert kmeans_objective(x, kmeans(x, 3, iters=20, seed=seed)) == pytest.approx(0.0, abs=1e-12)


def test_bundle_round_trips_bit_exactly(tmp_path):
    x = data(200)
    cond = torch.arange(200) % 3
    ref = build(x, cond, joint=JointSpec(kind="class"), rff_features=8, moments=True, bank=20, scales=(1.0, 2.0))
    save_reference(ref, tmp_path / "b")
    back = load_reference(tmp_path / "b", encoder_fingerprint="enc", data_fingerprint="dat")
    assert set(back.tensors()) == set(ref.tensors()) == {
        "landmarks", "alpha", "k_rr", "rff_weight", "rff_bias", "rff_mean", "mean", "cov", "bank", "bank_cond"
    }
    for name, t in ref.tensors().items():
        assert back.tensors()[name].dtype == t.dtype and torch.equal(back.tensors()[name], t), name
    for field in ("dim", "rows", "sigma", "scales", "joint", "request", "cond_dim", "encoder_fingerprint"):
        assert getattr(back, field) == getattr(ref, field), field
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["m"] == 32 and manifest["rows"] == 200 and manifest["seeds"]["kmeans"] == 0
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]  # no temp files left
    g = data(50, seed=1)
    est = MMDNystrom(MMDNystromConfig(scales=[1.0, 2.0]))
    assert torch.equal(est.loss(g, ref, cond[:50]), est.loss(g, back, cond[:50]))


def test_mismatched_or_corrupt_bundle_is_refused(tmp_path):
    ref = build(data(100))
    save_reference(ref, tmp_path)
    with pytest.raises(BundleMismatchError, match="encoder fingerprint enc.*other"):
        load_reference(tmp_path, encoder_fingerprint="other", data_fingerprint="dat")
    with pytest.raises(BundleMismatchError, match="data fingerprint dat.*new"):
        load_reference(tmp_path, encoder_fingerprint="enc", data_fingerprint="new")
    with pytest.raises(BundleMismatchError, match="no reference bundle"):
        load_reference(tmp_path / "missing", encoder_fingerprint="enc", data_fingerprint="dat")
    blob = bytearray((tmp_path / "reference.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "reference.safetensors").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="reference.safetensors: does not match the checksum.*corrupt"):
        load_reference(tmp_path, encoder_fingerprint="enc", data_fingerprint="dat")


def test_edited_manifest_is_refused(tmp_path):
    """An edited sigma in the manifest changes every kernel value: it must never load silently."""
    save_reference(build(data(100)), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["sigma"] *= 1.01
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="manifest.json: content does not match its checksum"):
        load_reference(tmp_path, encoder_fingerprint="enc", data_fingerprint="dat")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest)[:40])  # truncated
    with pytest.raises(IntegrityError, match="manifest.json: not readable JSON"):
        load_reference(tmp_path, encoder_fingerprint="enc", data_fingerprint="dat")


def test_reference_to_device_moves_every_tensor():
    ref = build(data(100), bank=10, moments=True)
    moved = ref.to("meta")
    assert moved is not ref and moved.sigma == ref.sigma and set(moved.tensors()) == set(ref.tensors())
    assert all(t.device.type == "meta" for t in moved.tensors().values())
    assert all(t.device.type == "cpu" for t in ref.tensors().values())


def test_stream_errors():
    x = data(100)
    with pytest.raises(RdmxError, match="re-iterable"):
        it = iter([stream(x)(), stream(x[:50])()])
        build_reference(lambda: next(it), ReferenceRequest(landmarks=4), encoder_fingerprint="e", data_fingerprint="d")
    with pytest.raises(RdmxError, match="needs conditions"):
        build(x, joint=JointSpec(kind="text"))
    with pytest.raises(RdmxError, match="at least 2"):
        build(x[:1])


def test_floor_is_the_mean_of_seeded_draws():
    x = data(300)
    ref = build(x)
    val = data(120, seed=5)
    est = MMDNystrom(MMDNystromConfig())
    floor = estimate_floor(est, ref, val, draws=3, n=1000, seed=4)  # n clipped to 120 rows
    gen = torch.Generator().manual_seed(4)
    manual = [float(est.loss(val[torch.randperm(120, generator=gen)[:120]], ref)) for _ in range(3)]
    assert floor == pytest.approx(np.mean(manual), rel=1e-6)
    # the whole validation set in any order has the same loss: draws agree
    assert np.ptp(manual) < 1e-6
    floor_small = estimate_floor(est, ref, val, draws=4, n=30, seed=0)
    assert floor_small > floor  # smaller batches: larger V-statistic bias


def test_k_rr_default_is_the_release_v_statistic_over_100k_rows():
    """Default krr_subsample = 100,000 (the release's); k_rr keeps the diagonal (V-statistic): on a
    stream smaller than that it is the float64 brute-force mean over every ordered pair."""
    from rdmx.compare.configs import MMDNystromConfig
    from rdmx.compare.mmd import MMDNystrom

    assert ReferenceRequest().krr_subsample == 100_000
    request = MMDNystrom(MMDNystromConfig(landmarks=16, kmeans_subsample=10_000)).request()
    assert request.krr_subsample == 100_000
    x = data()
    ref = build_reference(stream(x), request, encoder_fingerprint="enc", data_fingerprint="dat")
    x64 = x.double().numpy()
    k = np.exp(-cdist(x64, x64, "sqeuclidean") / (2 * ref.sigma**2))
    assert float(ref.k_rr[0]) == pytest.approx(k.mean(), rel=1e-12)
    n = len(x64)
    u_statistic = (k.sum() - n) / (n * (n - 1))
    assert float(ref.k_rr[0]) - u_statistic == pytest.approx((1 - u_statistic) / n, rel=1e-9)


def test_fixed_sigma_replaces_the_median_heuristic():
    """Table 4's ablation fixes σ = 65 for the kernel arms; the estimator refuses a median-σ reference."""
    from rdmx.compare.configs import MMDNystromConfig
    from rdmx.compare.mmd import MMDNystrom
    from rdmx.errors import RdmxError

    x = data()
    est = MMDNystrom(MMDNystromConfig(landmarks=16, kmeans_subsample=10_000, sigma=65.0))
    ref = build_reference(stream(x), est.request(), encoder_fingerprint="enc", data_fingerprint="dat")
    assert ref.sigma == 65.0 and ref.manifest()["request"]["sigma"] == 65.0
    x64 = x.double().numpy()
    k = np.exp(-cdist(x64, x64, "sqeuclidean") / (2 * 65.0**2))
    assert float(ref.k_rr[0]) == pytest.approx(k.mean(), rel=1e-12)
    g = x[:20].clone()
    assert torch.isfinite(est.loss(g, ref))
    median = build_reference(stream(x), MMDNystrom(MMDNystromConfig(landmarks=16, kmeans_subsample=10_000)).request(),
                             encoder_fingerprint="enc", data_fingerprint="dat")
    assert median.sigma != 65.0
    with pytest.raises(RdmxError, match="sigma"):
        est.loss(g, median)
    with pytest.raises(RdmxError, match="sigma"):
        est.request().merge(ReferenceRequest())
