"""rdmx.testing: the encoder contract check says which rule an encoder breaks, and the pytest
plugin is active wherever rdmx is installed."""

from __future__ import annotations

import os

import pytest
import torch

from rdmx.represent.encoder import Encoder, EncoderSpec
from rdmx.testing import ContractError, check_encoder_contract


class Small(Encoder):
    """Mean colour per 2×2 cell of an 8×8 image (12 values); ``fault`` breaks one rule."""

    def __init__(self, fault: str = "", dim: int = 48):
        super().__init__(EncoderSpec(name="small", family="test", checkpoint="(none)", dim=dim, resolution=8,
                                     resize="bilinear", mean=(0.0,) * 3, std=(1.0,) * 3))
        self.fault = fault
        self.lin = torch.nn.Linear(48, 48)
        self.freeze()
        if fault == "trainable":
            self.lin.weight.requires_grad_(True)
        if fault == "training":
            self.lin.training = True

    def features(self, x):
        f = self.lin(torch.nn.functional.avg_pool2d(x, 2).flatten(1))
        if self.fault == "random":
            f = f + torch.rand_like(f) * 1e-3
        if self.fault == "detached":
            f = f.detach()
        if self.fault == "batch":
            f = f + f.mean(dim=0, keepdim=True)
        return f


def test_a_correct_encoder_passes():
    f = check_encoder_contract(Small(), size=16)
    assert f.shape == (3, 48) and f.dtype == torch.float32


@pytest.mark.parametrize(("fault", "rule", "detail"), [
    ("trainable", "frozen", "parameters require grad, e.g. lin.weight"),
    ("training", "frozen", "modules in training mode: lin"),
    ("random", "deterministic", "the same images twice give features differing"),
    ("detached", "differentiable", "the gradient at the input images is none"),
    ("batch", "batch-independent", "differ by a relative"),
])
def test_each_rule_has_a_readable_message(fault, rule, detail):
    with pytest.raises(ContractError) as exc:
        check_encoder_contract(Small(fault), size=16)
    msg = str(exc.value)
    assert msg.startswith("encoder 'small'") and f": {rule}: " in msg and detail in msg, msg


def test_shape_against_the_spec():
    with pytest.raises(ContractError, match=r"shape: features of 3 images have shape \(3, 48\), expected \(3, 50\)"):
        check_encoder_contract(Small(dim=50), size=16)


def test_by_name_checks_the_registration_and_rebuilds():
    f = check_encoder_contract("toy-conv", {"dim": 24, "width": 4, "resolution": 16}, channels=1, size=20)
    assert f.shape == (3, 24)
    with pytest.raises(ContractError, match="unknown encoder 'toy-cnv'"):
        check_encoder_contract("toy-cnv")


def test_pytest_plugin_is_active(request, rdmx_offline_cache, rdmx_cache_dir, rdmx_plugins):
    assert request.config.pluginmanager.has_plugin("rdmx")  # loaded from the pytest11 entry point
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_HOME"].startswith(str(rdmx_offline_cache))
    assert rdmx_cache_dir.is_dir() and not any(rdmx_cache_dir.iterdir())
    assert "toy-conv" in rdmx_plugins.registry("encoders")
