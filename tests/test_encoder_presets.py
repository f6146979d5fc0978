"""Preset helpers: weight resolution modes, state-dict loading, per-preset configs, the contract check."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.represent.encoder import Encoder, EncoderSpec
from rdmx.represent.presets import (
    HFSource,
    PresetConfig,
    check_encoder_contract,
    file_digest,
    load_state_dict,
    preset_config,
    resolve_weights,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


def test_resolve_weights_modes(cache):
    src = HFSource("org/enc", (("model.safetensors",),))
    assert resolve_weights(PresetConfig(weights="random"), "enc", "org/enc", [src]).mode == "random"
    assert resolve_weights(PresetConfig(tiny=True), "enc", "org/enc", [src]).mode == "random"
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch enc"):
        resolve_weights(PresetConfig(), "enc", "org/enc", [src])
    snap = cache / "hf" / "hub" / "models--org--enc" / "snapshots" / "r1"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"abc")
    w = resolve_weights(PresetConfig(), "enc", "org/enc", [src], main=("model.safetensors",))
    assert (w.mode, w.path, w.revision, w.spec_weights) == ("cache", snap / "model.safetensors", "r1", "pretrained")
    f = cache / "mine.bin"
    f.write_bytes(b"hello")
    w = resolve_weights(PresetConfig(weights=str(f)), "enc", "org/enc", [src])
    assert (w.mode, w.revision, w.spec_weights) == ("file", hashlib.sha256(b"hello").hexdigest()[:16], str(f))
    with pytest.raises(RdmxError, match="neither"):
        resolve_weights(PresetConfig(weights=str(cache / "nope")), "enc", "org/enc", [src])


def test_load_state_dict_formats(tmp_path):
    sd = {"a": torch.arange(3.0), "b.c": torch.ones(2, 2)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "w.pth.tar")
    torch.save(sd, tmp_path / "plain.pth")
    for name in ("w.safetensors", "w.pth.tar", "plain.pth"):
        got = load_state_dict(tmp_path / name)
        assert set(got) == {"a", "b.c"} and torch.equal(got["a"], sd["a"])
    assert file_digest(tmp_path / "plain.pth") == hashlib.sha256((tmp_path / "plain.pth").read_bytes()).hexdigest()[:16]


def test_preset_config_knows_its_preset_and_forbids_unknown_keys():
    c = preset_config(PresetConfig, "pe-core")
    assert c.preset == "pe-core" and c().preset == "pe-core"
    assert "preset" not in c().model_dump()
    with pytest.raises(Exception, match="extra"):
        c(weigths="random")
    with pytest.raises(Exception):
        c(resolution=8)


class _Leaky(Encoder):
    """Mixes samples across the batch: the contract check must catch it."""

    def __init__(self):
        super().__init__(EncoderSpec("leaky", "test", "none", dim=3, resolution=8, dtype="float32", mean=(0.0,) * 3,
                                     std=(1.0,) * 3))
        self.freeze()

    def features(self, x):
        m = x.mean(dim=(2, 3))
        return m + m.mean(dim=0, keepdim=True)


def test_contract_check_catches_batch_dependence():
    with pytest.raises(AssertionError, match="batch-independent"):
        check_encoder_contract(_Leaky(), batch=3, size=8)
