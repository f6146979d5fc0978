"""TF-1 bilinear resize (the FID Inception's) against a float64 brute force of the rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rdmx.represent.encoder import EncoderSpec, resize_and_normalise
from rdmx.represent.resize import resize_bilinear_tf1


def brute_force(img: np.ndarray, h_out: int, w_out: int) -> np.ndarray:
    """One output pixel at a time: source (i·H/h, j·W/w), clamped upper neighbour, bilinear weights."""
    c, h, w = img.shape
    out = np.zeros((c, h_out, w_out))
    for i in range(h_out):
        sy = i * h / h_out
        y0 = math.floor(sy)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(w_out):
            sx = j * w / w_out
            x0 = math.floor(sx)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[:, i, j] = ((1 - fy) * (1 - fx) * img[:, y0, x0] + (1 - fy) * fx * img[:, y0, x1]
                            + fy * (1 - fx) * img[:, y1, x0] + fy * fx * img[:, y1, x1])
    return out


@pytest.mark.parametrize("shape, size", [((13, 17), (29, 11)), ((64, 48), (75, 75)), ((256, 256), (299, 299))])
def test_matches_brute_force(shape, size):
    rng = np.random.default_rng(0)
    img = rng.random((2, *shape))
    got = resize_bilinear_tf1(torch.from_numpy(img)[None], size)[0].numpy()
    np.testing.assert_allclose(got, brute_force(img, *size), rtol=0, atol=1e-12)


def test_known_values_and_not_the_half_pixel_rule():
    x = torch.tensor([[[[0.0, 2.0]]]], dtype=torch.float64)  # 1 × 2 → 1 × 4: sources 0, .5, 1, 1.5
    assert resize_bilinear_tf1(x, (1, 4)).flatten().tolist() == [0.0, 1.0, 2.0, 2.0]
    half_pixel = torch.nn.functional.interpolate(x, size=(1, 4), mode="bilinear", align_corners=False)
    assert half_pixel.flatten().tolist() != [0.0, 1.0, 2.0, 2.0]


def test_gradient():
    x = torch.rand(1, 2, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: resize_bilinear_tf1(t, (11, 4)), (x,))


def test_encoder_spec_routes_to_it():
    spec = EncoderSpec(name="t", family="t", checkpoint="t", dim=1, resolution=9, resize="tf1-bilinear",
                       antialias=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(resize_and_normalise(x, spec), resize_bilinear_tf1(x, (9, 9)) * 2 - 1)
