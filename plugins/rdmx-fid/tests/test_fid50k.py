"""The `fid` metric (FID-50K as the literature computes it) with torch-fidelity's Inception built with
random weights: the same number as torch-fidelity's extractor + a float64 scipy Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch.utils.data import TensorDataset

from rdmx.errors import WeightsMissingError
from rdmx.evaluate.base import EvalContext
from rdmx.testing import isolate_weight_caches
from rdmx_fid.fid50k import FidMetric, fidelity_inception
from rdmx_fid.plugin import FidConfig, rdmx_register_metrics


class Data:
    def __init__(self, images):
        self.train = TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
        self.val = self.train

    def fingerprint(self):
        return "toy-images"


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(root))


def test_fid_streams_uint8_samples_through_torch_fidelity(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(8, 3, 40, 40, generator=g)
    gen = (torch.rand(8, 3, 40, 40, generator=g) * 0.7).clamp(0, 1)
    metric = FidMetric(FidConfig(n=6, weights="random", seed=1, batch_size=4, cache_dir=str(tmp_path)))
    assert metric.stream_samples == 6
    metric.observe(gen[:4])
    metric.observe(gen[4:])  # only 6 of the 8 are taken
    ctx = EvalContext(samples=gen)
    ctx.data = Data(real)
    out = metric(ctx)
    assert out["fid_samples"] == 6.0

    ref, _ = fidelity_inception("random", seed=1)
    with torch.no_grad():
        quant = lambda x: (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)  # noqa: E731 - the .npz rounding
        f_gen = ref(quant(gen[:6]))[0].numpy()
        f_real = ref(quant(real))[0].numpy()
    assert out["fid"] == pytest.approx(scipy_fid(f_gen, f_real), rel=1e-6)
    assert list((tmp_path / "fid").glob("*.safetensors"))  # real statistics cached

    # cached statistics and a stats .npz give the same value
    again = FidMetric(FidConfig(n=6, weights="random", seed=1, cache_dir=str(tmp_path)))
    again.observe(gen)
    assert again(ctx)["fid"] == pytest.approx(out["fid"], rel=1e-9)
    np.savez(tmp_path / "ref.npz", mu=f_real.astype(np.float64).mean(0), sigma=np.cov(f_real.astype(np.float64), rowvar=False))
    by_file = FidMetric(FidConfig(n=6, weights="random", seed=1, stats=str(tmp_path / "ref.npz")))
    by_file.observe(gen)
    assert by_file(EvalContext(samples=gen))["fid"] == pytest.approx(out["fid"], rel=1e-6)


def test_missing_weights_say_how_to_fetch(tmp_path, monkeypatch):
    isolate_weight_caches(tmp_path, monkeypatch)
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch fid"):
        fidelity_inception("pretrained")
    got = {}
    rdmx_register_metrics(lambda name, factory, config, description="", **meta: got.setdefault(name, meta))
    assert got["fid"]["weights_available"]() is False
    assert got["fid"]["weights_sources"][0].filename == "weights-inception-2015-12-05-6726825d.pth"


def test_weights_list_shows_the_fid_metric():
    from rdmx.represent.weights import status

    assert "fid" in {s.name for s in status()}
