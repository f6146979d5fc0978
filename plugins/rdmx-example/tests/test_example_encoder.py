import math

import torch

from rdmx_example.encoder import build
from rdmx_example.plugin import GradientHistogramConfig


def test_shape_frozen_and_gradient_reaches_input():
    enc = build(GradientHistogramConfig())
    x = torch.rand(3, 1, 20, 20, requires_grad=True)
    f = enc(x)
    assert f.shape == (3, enc.spec.dim) and f.dtype == torch.float32
    assert not any(p.requires_grad for p in enc.parameters())
    f.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_vertical_edge_lands_in_the_horizontal_gradient_bin():
    """A left-dark/right-bright image has gradient angle 0: bin 0 must dominate every cell."""
    enc = build(GradientHistogramConfig(cells=1, bins=4, resolution=16))
    x = torch.zeros(1, 1, 16, 16)
    x[..., 8:] = 1.0
    f = enc(x)[0]
    assert int(f.argmax()) == 0
    # the orthogonal orientation (pi/2, bin 2) gets exp(-0.5 * 2**2) of the weight at most
    assert f[2] <= f[0] * math.exp(-0.5 * 4) + 1e-6


def test_fingerprint_changes_with_resolution():
    a = build(GradientHistogramConfig()).fingerprint
    b = build(GradientHistogramConfig(resolution=48)).fingerprint
    assert a != b
