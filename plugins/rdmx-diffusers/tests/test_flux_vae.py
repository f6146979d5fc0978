"""flux-vae: panel facts, contract, and features equal to diffusers' AutoencoderKL posterior mean."""

from __future__ import annotations

import json
import time

import pytest
import torch

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx_diffusers.plugin import rdmx_register_encoders
from rdmx.testing import check_encoder_contract, isolate_weight_caches, registered_entry


def _entry():
    return registered_entry(rdmx_register_encoders, "rdmx-diffusers")


ENTRY = _entry()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def test_panel_facts_and_real_size_on_meta():
    assert (ENTRY.declared("resolution", {}), ENTRY.declared("dim", {}), ENTRY.meta["role_hint"]) == (256, 1024, "heldout")
    assert ENTRY.declared("dim", {"resolution": 128}) == 16 * 4 * 4  # registered as a function of the config
    with torch.device("meta"):
        enc = ENTRY.build({"weights": "random"})
        f = enc.features(enc.preprocess(torch.empty(2, 3, 100, 100)))
    assert f.shape == (2, 16 * 8 * 8) and enc.dim == 1024
    assert (enc.spec.resize, enc.spec.mean, enc.spec.std) == ("bilinear", (0.5,) * 3, (0.5,) * 3)


def test_tiny_contract():
    check_encoder_contract("flux-vae", {"tiny": True}, batch=2, size=48)


def test_resolution_must_fit_the_patch_grid():
    with pytest.raises(RdmxError, match="multiple of 32"):
        ENTRY.build({"tiny": True, "resolution": 200})
    assert ENTRY.build({"tiny": True, "resolution": 128}).dim == 16 * 4 * 4


def test_missing_weights_fail_fast(cache):
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch flux-vae"):
        ENTRY.build({})
    assert time.perf_counter() - t < 5


def test_cached_weights_give_autoencoderkl_posterior_mean(cache):
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16, 16, 16),
               layers_per_block=1, norm_num_groups=4, use_quant_conv=True, use_post_quant_conv=False,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    vae = AutoencoderKL(**cfg).eval()
    with torch.no_grad():  # non-trivial quant_conv so that its use is checked
        vae.quant_conv.weight.normal_(0, 0.2)
    snap = cache / "hf" / "hub" / "models--black-forest-labs--FLUX.1-schnell" / "snapshots" / "f00d"
    (snap / "vae").mkdir(parents=True)
    (snap / "vae" / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderKL"}))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()},
              str(snap / "vae" / "diffusion_pytorch_model.safetensors"))
    assert ENTRY.meta["weights_available"]()

    enc = ENTRY.build({"resolution": 64})
    assert enc.spec.revision == "f00d" and enc.spec.weights == "pretrained"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        got = enc.features(enc.preprocess(x))  # float32, no autocast
        mean = vae.encode(2 * x - 1).latent_dist.mean  # (2, 16, 8, 8)
        ref = mean.reshape(2, 16, 2, 4, 2, 4).mean(dim=(3, 5)).reshape(2, -1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
