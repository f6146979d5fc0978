"""The example encoder's tests: the contract from rdmx's testing kit, plus what is specific to it.

rdmx's pytest plugin (installed with rdmx) makes the Hugging Face libraries offline and provides
the fixtures; no conftest is needed."""

import math

import pytest
import torch

from rdmx.testing import check_encoder_contract
from rdmx_example.encoder import build
from rdmx_example.plugin import GradientHistogramConfig


@pytest.mark.parametrize("config", [{}, {"cells": 2, "bins": 5, "resolution": 24}])
def test_contract(config):
    """Shape, dim vs registration, float32, determinism, gradients, batch invariance, fingerprint."""
    f = check_encoder_contract("example-hog", config, batch=3, size=20, channels=1, rtol=1e-5)
    cells, bins = config.get("cells", 4), config.get("bins", 8)
    assert f.shape == (3, cells * cells * bins)


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


def test_options_are_strict(rdmx_plugins):
    entry = rdmx_plugins.get("encoders", "example-hog")
    for bad in ({"cells": "4"}, {"cells": 4.0}, {"bins": True}):
        with pytest.raises(Exception, match="valid integer"):
            entry.validate_config(bad)
