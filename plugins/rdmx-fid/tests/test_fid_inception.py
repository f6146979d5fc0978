"""The FID Inception preset against pytorch-fid's own InceptionV3 wrapper with the same weights."""

from __future__ import annotations

import time

import pytest
import torch

from rdmx.errors import WeightsMissingError
from rdmx_fid import encoder as fid_encoder
from rdmx_fid.plugin import CHECKPOINT, rdmx_register_encoders
from rdmx.testing import check_encoder_contract, isolate_weight_caches, registered_entry


def _entry():
    return registered_entry(rdmx_register_encoders, "rdmx-fid")


ENTRY = _entry()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def test_panel_facts():
    m = ENTRY.meta
    assert (ENTRY.name, ENTRY.declared("resolution", {}), m["dim"], m["role_hint"]) == ("inception", 299, 2048, "train")
    assert ENTRY.declared("resolution", {"tiny": True}) == 75
    with torch.device("meta"):
        enc = ENTRY.build({"weights": "random"})
        f = enc.features(enc.preprocess(torch.empty(2, 3, 64, 64)))
    assert f.shape == (2, 2048)
    s = enc.spec
    assert (s.resolution, s.dtype, s.resize, s.antialias, s.mean, s.std) == (
        299, "float32", "tf1-bilinear", False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert s.channels_last


def test_tiny_contract():
    check_encoder_contract("inception", {"tiny": True}, batch=2, size=40, rtol=1e-4)


def test_missing_weights_fail_fast(cache):
    assert ENTRY.meta["weights_available"]() is False
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch inception"):
        ENTRY.build({})
    assert time.perf_counter() - t < 5


def test_cached_weights_match_pytorch_fid_reference(cache, monkeypatch):
    """Same weights through pytorch-fid's InceptionV3 (pool3 block) give the same features."""
    import pytorch_fid.inception as pf

    torch.manual_seed(0)
    sd = fid_encoder.fid_inception().state_dict()
    ckpt_dir = cache / "torch" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save(sd, ckpt_dir / CHECKPOINT)
    assert ENTRY.meta["weights_available"]() is True
    enc = ENTRY.build({"resolution": 75})
    assert enc.spec.weights == "pretrained" and len(enc.spec.revision) == 16

    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: sd)
    ref = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=False, normalize_input=True).eval()
    x = torch.rand(2, 3, 75, 75)
    with torch.no_grad():
        expected = ref(x)[0].flatten(1)  # pytorch-fid maps [0, 1] to [-1, 1] itself
        got = enc(x)  # same size: no resize, only (x - 0.5) / 0.5
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_resize_is_the_tf1_bilinear_rule_then_2x_minus_1():
    """256 → 299 by TF-1's bilinear rule (torch-fidelity's own implementation as the reference),
    then x·2 − 1; torch's antialiased bicubic differs by a few per cent."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x as tf1

    with torch.device("meta"):
        enc = ENTRY.build({"weights": "random"})
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = enc.preprocess(x)
    want = tf1(x, size=(299, 299), align_corners=False) * 2 - 1
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)  # torch-fidelity places its grid in float32
    bicubic = torch.nn.functional.interpolate(x, size=(299, 299), mode="bicubic", antialias=True) * 2 - 1
    rel = float((bicubic - got).norm() / got.norm())
    assert rel > 0.01
