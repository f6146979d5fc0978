"""Precision at GPU scale, on CPU: bf16 weights for frozen bf16-autocast encoders (FID Inception
stays float32; the fingerprint follows the weights), float32 generator parameters under the
generator's own bf16 autocast, and torch.compile within tolerance of eager."""

from __future__ import annotations

import tomllib
from dataclasses import asdict

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.fingerprint import fingerprint
from rdmx.plugins import get_plugins
from rdmx.recipe import validate_recipe
from rdmx.represent.presets import check_encoder_contract
from rdmx.train.build import build_components
from tests.helpers import ROOT


@pytest.mark.parametrize("name", ["mae", "siglip2", "dreamsim"])
def test_bf16_weights_keep_the_contract_and_change_the_fingerprint(name):
    enc = get_plugins().registry("encoders").get(name).build({"weights": "random", "tiny": True})
    spec32 = enc.spec
    # float32 weights keep the fingerprint every cache was keyed by before weights_dtype existed
    old = {k: v for k, v in asdict(spec32).items() if k != "weights_dtype"}
    assert enc.fingerprint == fingerprint({"kind": "encoder", **old})
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f32 = enc(x)
    enc.hold_weights_in("bfloat16")
    assert {p.dtype for p in enc.parameters()} == {torch.bfloat16}
    assert enc.spec.weights_dtype == "bfloat16" and enc.fingerprint != spec32.fingerprint()
    f16 = check_encoder_contract(enc, batch=3, size=40)  # float32 out, input gradient, batch invariance
    with torch.no_grad():
        f16 = enc(x)
    assert ((f16 - f32).norm() / f32.norm()) < 3e-2  # bf16 rounding of weights only


def _recipe(**battery):
    raw = tomllib.loads((ROOT / "recipes" / "quickstart.toml").read_text())
    raw["battery"] = {
        "encoders": [
            {"name": "inception", "weights": "random", "tiny": True},
            {"name": "mae", "weights": "random", "tiny": True, "resolution": 32},
            {"name": "toy-conv", "role": "heldout"},
        ],
        **battery,
    }
    raw["tracking"] = {"backend": "none"}
    return raw


def test_battery_weights_dtype_leaves_float32_encoders_alone():
    c = build_components(validate_recipe(_recipe(weights_dtype="bfloat16"), "bf16 battery"))
    dtypes = {k: {p.dtype for p in enc.parameters()} for k, enc in c.encoders.items()}
    assert dtypes == {"inception": {torch.float32}, "mae": {torch.bfloat16}, "toy-conv": {torch.float32}}
    assert c.encoders["inception"].spec.weights_dtype == "float32"
    assert {p.dtype for p in c.generator.parameters()} == {torch.float32}
    raw = _recipe()
    raw["battery"]["encoders"][0]["weights_dtype"] = "bfloat16"
    with pytest.raises(RdmxError, match=r"battery\.encoders\[0\]\.weights_dtype: .*'inception' computes in float32"):
        build_components(validate_recipe(raw, "bf16 inception"))


def test_generator_bf16_autocast_keeps_float32_parameters():
    from rdmx.builtin.generators import ConvGenerator
    from rdmx.builtin.registrations import ConvGeneratorConfig
    from rdmx.train.generator import DataInfo

    info = DataInfo((3, 32, 32), 10)
    gens = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        gens[precision] = ConvGenerator(ConvGeneratorConfig(width=16, precision=precision), info)
    g = torch.Generator().manual_seed(1)
    noise, cond = gens["float32"].sample_noise(4, g), torch.arange(4)
    a, b = gens["float32"](noise, cond), gens["bfloat16"](noise, cond)
    assert a.dtype == b.dtype == torch.float32
    assert 0 < (a - b).abs().max() < 3e-2  # bf16 compute, not bf16 storage
    b.square().sum().backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in gens["bfloat16"].parameters())


def test_compile_matches_eager(tmp_path):
    from rdmx.train.loop import Trainer
    from tests.test_engine import tiny

    grads = {}
    for compiled in (False, True):  # one training encoder keeps the CPU compile short; references shared
        r = tiny(tmp_path, "train.steps=1", f"train.compile={str(compiled).lower()}",
                 'battery.encoders[1].role="heldout"', 'battery.encoders[2].role="heldout"')
        trainer = Trainer(r, tmp_path / str(compiled), progress=False)
        trainer.prepare_references()
        trainer.c.generator.zero_grad(set_to_none=True)
        trainer.compute_gradient(0)
        grads[compiled] = torch.cat([p.grad.flatten() for p in trainer.c.generator.parameters()])
    assert ((grads[True] - grads[False]).norm() / grads[False].norm()) < 1e-4
