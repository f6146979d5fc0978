"""The evaluation protocol: uint8 quantisation of samples against a float64 hand computation,
protocol differences, and files that cannot be compared."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.evaluate.protocol import compare_evals, protocol_differences
from rdmx.train.sampling import generate_features


class Fixed(torch.nn.Module):
    """A 'generator' whose samples are known values in and beyond [0, 1]."""

    noise_dim = 4

    def __init__(self, images):
        super().__init__()
        self.images = images

    def sample_noise(self, n, g, device):
        return torch.randn(n, self.noise_dim, generator=g)

    def forward(self, z, cond=None):
        return self.images[: len(z)]


def test_uint8_quantisation_is_what_a_saved_png_holds():
    rng = np.random.default_rng(0)
    images = rng.uniform(-0.2, 1.2, size=(6, 3, 4, 4))
    gen = Fixed(torch.tensor(images, dtype=torch.float32))
    flat = {"id": torch.nn.Flatten()}
    raw, _, _ = generate_features(gen, flat, 6, 0, 6, torch.device("cpu"), cond=torch.zeros(6, dtype=torch.long))
    q, _, _ = generate_features(gen, flat, 6, 0, 6, torch.device("cpu"), cond=torch.zeros(6, dtype=torch.long),
                                quantize="uint8")
    want = np.floor(np.clip(images.astype(np.float32).astype(np.float64), 0, 1) * 255 + 0.5) / 255
    assert np.allclose(q["id"].double().numpy(), want.reshape(6, -1), atol=1e-7)
    assert np.allclose(raw["id"].numpy(), images.reshape(6, -1).astype(np.float32))


def test_versions_are_reported_never_refused():
    a = {"n": 64, "encoders": {"x": {"fingerprint": "f1"}}, "versions": {"torch": "2.4"}}
    b = {"n": 64, "encoders": {"x": {"fingerprint": "f1"}}, "versions": {"torch": "2.5"}}
    assert protocol_differences(a, b) == []
    c = {**b, "encoders": {"x": {"fingerprint": "f2"}}}
    assert protocol_differences(a, c) == [("encoders.x.fingerprint", "f1", "f2")]
    # what caused the rest comes first (the sample count, before the banks it sized)
    d = {**c, "n": 48, "data": {"fingerprint": "d"}}
    assert [k for k, _, _ in protocol_differences(a, d)] == ["n", "data.fingerprint", "encoders.x.fingerprint"]


def test_files_that_cannot_be_compared_are_named(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"summary": {"sw_rK": 1.0}, "settings": {}}))
    with pytest.raises(RdmxError, match=r"old.json: records no evaluation protocol"):
        compare_evals(old, old)
    with pytest.raises(RdmxError, match=r"missing.json: no such evaluation file"):
        compare_evals(tmp_path / "missing.json", old)
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(RdmxError, match=r"bad.json"):
        compare_evals(bad, old)
