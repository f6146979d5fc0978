"""webssl and radio: panel facts, contract, cached loading, and radio's remote-code guard."""

from __future__ import annotations

import time

import pytest
import torch

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.testing import check_encoder_contract, isolate_weight_caches, registered_entries
from rdmx_transformers.plugin import rdmx_register_encoders

E = registered_entries(rdmx_register_encoders, "rdmx-transformers")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def test_panel_facts():
    w, r = E["webssl"], E["radio"]
    assert (w.meta["checkpoint"], w.declared("resolution", {}), w.declared("dim", {}), w.meta["pooling"],
            w.meta["role_hint"]) == ("facebook/webssl-dino1b-full2b-224", 224, 1536, "cls", "train")
    assert (r.meta["checkpoint"], r.declared("resolution", {}), r.declared("dim", {}), r.meta["pooling"],
            r.meta["role_hint"]) == ("nvidia/C-RADIOv3-L", 256, 3072, "summary", "heldout")
    assert w.declared("dim", {"tiny": True}) == 32


def test_webssl_real_size_on_meta():
    with torch.device("meta"):
        enc = E["webssl"].build({"weights": "random"})
        f = enc.features(enc.preprocess(torch.empty(2, 3, 50, 50)))
    assert f.shape == (2, 1536) and enc.dim == 1536
    assert len(enc.model.encoder.layer) == 40
    assert enc.spec.mean == (0.485, 0.456, 0.406) and enc.spec.std == (0.229, 0.224, 0.225)
    assert sum(p.numel() for p in enc.model.parameters()) > 1.0e9  # the 1B model


def test_webssl_tiny_contract():
    check_encoder_contract("webssl", {"tiny": True}, batch=3, size=40)


def test_webssl_missing_weights_fail_fast(cache):
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch webssl"):
        E["webssl"].build({})
    assert time.perf_counter() - t < 5


def test_webssl_cached_snapshot_gives_pooler_output(cache):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    ref = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   use_swiglu_ffn=True, image_size=224, patch_size=14)).eval()
    snap = cache / "hf" / "hub" / "models--facebook--webssl-dino1b-full2b-224" / "snapshots" / "beef"
    ref.save_pretrained(str(snap))
    enc = E["webssl"].build({})
    assert enc.spec.revision == "beef" and enc.dim == 32
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        got = enc.features(enc.preprocess(x))
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        hidden = ref(pixel_values=(x - mean) / std).last_hidden_state
        expected = hidden[:, 0]  # Dinov2Model's last_hidden_state is after the final layernorm
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_radio_needs_opt_in_and_has_no_tiny(cache):
    with pytest.raises(RdmxError, match="trust_remote_code = true"):
        E["radio"].build({"weights": "random"})
    with pytest.raises(RdmxError, match="no tiny RADIO"):
        E["radio"].build({"tiny": True, "trust_remote_code": True})


def test_radio_without_cached_code_is_a_clear_error(cache):
    t = time.perf_counter()
    with pytest.raises(RdmxError, match="model code in the local cache"):
        E["radio"].build({"weights": "random", "trust_remote_code": True})
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch radio"):
        E["radio"].build({"trust_remote_code": True})
    assert time.perf_counter() - t < 5


CONFIG_CODE = '''
from transformers import PretrainedConfig


class MockRadioConfig(PretrainedConfig):
    model_type = "mock_radio"

    def __init__(self, width=8, summary_dim=24, **kw):
        self.width = width
        self.summary_dim = summary_dim
        super().__init__(**kw)
'''

MODEL_CODE = '''
import torch
from transformers import PreTrainedModel

from .configuration_mock import MockRadioConfig


class MockRadioModel(PreTrainedModel):
    config_class = MockRadioConfig

    def __init__(self, config):
        super().__init__(config)
        self.patch = torch.nn.Conv2d(3, config.width, 16, 16)
        self.head = torch.nn.Linear(config.width, config.summary_dim)
        self.post_init()

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(tokens.mean(1)), tokens
'''


def test_radio_loads_cached_remote_code_when_opted_in(cache):
    """A stand-in for the RADIO repo (remote-code config + model in the snapshot) goes through the
    same trust_remote_code path offline; features are the model's summary output."""
    import json

    from transformers import AutoConfig, AutoModel

    snap = cache / "hf" / "hub" / "models--nvidia--C-RADIOv3-L" / "snapshots" / "c0de"
    snap.mkdir(parents=True)
    (snap / "configuration_mock.py").write_text(CONFIG_CODE)
    (snap / "modeling_mock.py").write_text(MODEL_CODE)
    (snap / "config.json").write_text(json.dumps({
        "model_type": "mock_radio", "width": 8, "summary_dim": 24,
        "auto_map": {"AutoConfig": "configuration_mock.MockRadioConfig", "AutoModel": "modeling_mock.MockRadioModel"}}))
    cfg = AutoConfig.from_pretrained(str(snap), trust_remote_code=True, local_files_only=True)
    torch.manual_seed(0)
    AutoModel.from_config(cfg, trust_remote_code=True).save_pretrained(str(snap))
    assert E["radio"].meta["weights_available"]()

    enc = E["radio"].build({"trust_remote_code": True, "resolution": 64})
    assert (enc.dim, enc.spec.revision, enc.spec.weights) == (24, "c0de", "pretrained")
    assert enc.spec.mean == (0.0, 0.0, 0.0) and enc.spec.std == (1.0, 1.0, 1.0)
    x = torch.rand(2, 3, 64, 64)
    ref = AutoModel.from_pretrained(str(snap), trust_remote_code=True, local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(enc.features(enc.preprocess(x)), ref(x)[0], rtol=1e-5, atol=1e-6)
    check_encoder_contract(enc, batch=2, size=32)
    rnd = E["radio"].build({"trust_remote_code": True, "weights": "random", "resolution": 64, "seed": 1})
    assert rnd.spec.weights == "random" and rnd.fingerprint != enc.fingerprint
    assert not torch.allclose(rnd(x), enc(x))
