"""benchmarks/step_flops.py counts a recipe's FLOPs on the meta device: the same counts as running
the models on real tensors, and the step total is the gradient-cached step's sum."""

from __future__ import annotations

import importlib.util

import torch

from rdmx.plugins import get_plugins
from rdmx.train.generator import DataInfo
from tests.helpers import ROOT


def _module():
    spec = importlib.util.spec_from_file_location("step_flops", ROOT / "benchmarks" / "step_flops.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_meta_counts_equal_counts_on_real_tensors():
    """benchmarks/timing.count_flops on the CPU (attention through the math backend: torch's fused
    CPU kernel has no FLOP formula) gives the meta device's counts."""
    sf = _module()

    def _flops(fn):
        return sf.count_flops(fn, torch.device("cpu"))

    cfg = {"tiny": True, "resolution": 64, "weights": "random"}
    on_meta = sf.encoder_flops("mae", cfg, (3, 48, 48))
    enc = get_plugins().get("encoders", "mae").build(cfg)  # bf16 autocast on the CPU: same FLOPs
    x = torch.rand(1, 3, 48, 48)
    xg = x.clone().requires_grad_(True)
    assert on_meta["fwd"] == _flops(lambda: torch.no_grad()(enc)(x)) > 0
    assert on_meta["fwd_bwd"] == _flops(lambda: enc(xg).sum().backward()) > on_meta["fwd"]

    info = DataInfo((3, 32, 32), 10)
    gcfg = {"tiny": True, "weights": "random", "zero_init": False}
    on_meta = sf.generator_flops("pmf-h", {"tiny": True}, info)
    gen = get_plugins().get("generators", "pmf-h").build(gcfg, info)
    g = torch.Generator().manual_seed(0)
    z, y = gen.sample_noise(1, g), gen.sample_conditions(1, g)
    assert on_meta["fwd"] == _flops(lambda: torch.no_grad()(gen)(z, y)) > 0
    assert on_meta["fwd_bwd"] == _flops(lambda: gen(z, y).sum().backward()) > 2 * on_meta["fwd"]
    assert isinstance(torch.autocast, type)  # the meta no-op is undone


def test_recipe_step_is_generator_and_training_encoders_in_both_phases(capsys):
    sf = _module()
    c = sf.recipe_costs(ROOT / "recipes" / "quickstart.toml", classes=10, cache={})
    assert c["shape"] == (1, 32, 32) and c["data"] == "its data"  # the digits are grey
    train = [v for v in c["encoders"].values() if v["role"] == "train"]
    assert len(train) == 3 and len(c["encoders"]) == 5 and not c["skipped"]
    assert c["step"] == c["gen"]["fwd"] + c["gen"]["fwd_bwd"] + sum(v["fwd"] + v["fwd_bwd"] for v in train)
    assert c["eval"] == c["gen"]["fwd"] + sum(v["fwd"] for v in c["encoders"].values())
    sf.report([c], {"quickstart.toml": 100.0})
    out = capsys.readouterr().out
    assert "step per generated image" in out and "target 100 images/s needs" in out
