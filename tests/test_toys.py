"""Builtin toy components: digits, spiral data and metric (analytic checks), toy encoders, generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdmx.builtin.spiral_metric import spiral_scores
from rdmx.builtin.toydata import spiral_curve
from rdmx.plugins import get_plugins


def build(kind, name, cfg=None, *args):
    return get_plugins().registry(kind).get(name).build(cfg or {}, *args)


def test_digits_are_the_real_1797_split_stratified():
    d = build("datasets", "digits", {"image_size": 16})
    assert len(d.train) + len(d.val) == 1797 and len(d.val) == 360
    x, y = d.train[0]
    assert x.shape == (1, 16, 16) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    counts = torch.bincount(torch.stack([d.val[i][1] for i in range(len(d.val))]), minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified 20 %
    assert d.fingerprint() != build("datasets", "digits", {"image_size": 32}).fingerprint()


def test_spiral_embedding_is_orthonormal_and_radius_matches():
    d = build("datasets", "spiral")
    emb = d.extras["embedding"]
    assert np.allclose(emb.T @ emb, np.eye(2), atol=1e-12)
    x = torch.stack([d.train[i][0] for i in range(len(d.train))]).double().numpy()
    assert x.shape == (2000, 64)
    r = np.linalg.norm(x @ emb, axis=1)
    assert 0.3 < r.min() < 0.6 and 2.3 < r.max() < 2.8  # r = 0.5 + 2t plus 0.05 noise
    # nothing is lost off the plane: the 64-D points lie in the embedding's span
    assert np.allclose(x, (x @ emb) @ emb.T, atol=1e-5)


def test_spiral_scores_against_analytic_values():
    kw = {"turns": 2.0, "r0": 0.5, "r1": 2.0}
    on = spiral_curve(np.linspace(0, 1, 5000), **kw)
    s = spiral_scores(on, **kw)
    assert s["recall"] == 1.0 and s["med_dist"] < 1e-3
    half = spiral_curve(np.linspace(0, 0.5, 5000), **kw)
    # 30 of the 60 anchors have t <= 0.5; the next one lies ~0.32 along the curve, beyond 0.15
    assert spiral_scores(half, **kw)["recall"] == pytest.approx(30 / 60)
    # radial offset by 0.1: the nearest curve point is 0.1 away (turns are 2.0 apart radially)
    t = np.linspace(0.1, 0.9, 2000)
    theta = 4 * np.pi * t
    r = 0.5 + 2 * t + 0.1
    shifted = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    assert spiral_scores(shifted, **kw)["med_dist"] == pytest.approx(0.1, abs=0.005)


@pytest.mark.parametrize("name, cfg", [("toy-conv", {"resolution": 16}), ("pixels", {"resolution": 8})])
def test_toy_encoders_frozen_differentiable_deterministic(name, cfg):
    enc = build("encoders", name, cfg)
    x = torch.rand(3, 1, 20, 20, requires_grad=True)
    f = enc(x)
    assert f.shape == (3, enc.dim) and f.dtype == torch.float32
    f.square().sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in enc.parameters())
    again = build("encoders", name, cfg)
    assert torch.equal(again(x.detach()), enc(x.detach()))


def test_toy_conv_seed_changes_weights_and_fingerprint():
    a, b = build("encoders", "toy-conv", {"seed": 1}), build("encoders", "toy-conv", {"seed": 2})
    x = torch.rand(2, 1, 32, 32)
    assert not torch.allclose(a(x), b(x)) and a.fingerprint != b.fingerprint


def test_generators_shapes_and_ranges():
    d = build("datasets", "digits", {"image_size": 16})
    g = build("generators", "conv", {"width": 8}, d.info())
    z = g.sample_noise(5, torch.Generator().manual_seed(0))
    c = g.sample_conditions(5, torch.Generator().manual_seed(0))
    x = g(z, c)
    assert x.shape == (5, 1, 16, 16) and 0 <= x.min().item() and x.max().item() <= 1
    with pytest.raises(ValueError, match="class-conditional"):
        g(z, None)
    s = build("datasets", "spiral")
    m = build("generators", "mlp", {}, s.info())
    assert m(m.sample_noise(4, torch.Generator().manual_seed(0))).shape == (4, 64)
    with pytest.raises(Exception, match="image"):
        build("generators", "conv", {}, s.info())
