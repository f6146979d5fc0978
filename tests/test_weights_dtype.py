"""weights_dtype (the release's battery_bf16): frozen encoder weights stored in bfloat16, recorded in
the fingerprint; float32-only encoders (the FID Inception) refuse it."""

from __future__ import annotations

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.recipe import load_recipe
from rdmx.train.build import build_components


def components(extra: str):
    return build_components(load_recipe("recipes/quickstart.toml", [f"battery.encoders[4]={extra}"]))


def test_bf16_weights_reach_the_battery_and_the_fingerprint():
    plain = components('{ name = "mae", tiny = true, role = "heldout", seed = 2 }').encoders["mae"]
    half = components('{ name = "mae", tiny = true, role = "heldout", seed = 2, weights_dtype = "bfloat16" }').encoders["mae"]
    assert all(p.dtype == torch.float32 for p in plain.parameters())
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert half.fingerprint != plain.fingerprint and half.spec.weights_dtype == "bfloat16"
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        a, b = plain(x), half(x)
    assert a.dtype == b.dtype == torch.float32
    rel = float((a - b).norm() / a.norm())
    assert 0 < rel < 0.05  # the same encoder under bf16 autocast, rounded weights: close, not equal


def test_float32_encoders_refuse_it():
    with pytest.raises(RdmxError, match=r"battery.encoders\[4\].weights_dtype.*inception.*float32"):
        components('{ name = "inception", tiny = true, role = "heldout", weights_dtype = "bfloat16" }')
