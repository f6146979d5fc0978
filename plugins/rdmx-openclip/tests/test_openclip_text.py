"""siglip2-text: real-size dim on meta, tiny contract, cached checkpoint + tokenizer vs open_clip."""

from __future__ import annotations

import json
import time

import pytest
import torch

from rdmx.errors import WeightsMissingError
from rdmx_openclip.plugin import TINY_EMBED, TINY_TEXT, rdmx_register_encoders
from rdmx.testing import registered_entry, isolate_weight_caches


def _entry():
    return registered_entry(rdmx_register_encoders, "rdmx-openclip")


ENTRY = _entry()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def test_facts_and_real_size_on_meta():
    m = ENTRY.meta
    assert (m["modality"], ENTRY.declared("dim", {}), m["checkpoint"]) == ("text", 1152, "hf-hub:timm/ViT-SO400M-16-SigLIP2-256")
    assert ENTRY.declared("dim", {"tiny": True}) == TINY_EMBED
    with torch.device("meta"):
        enc = ENTRY.build({"weights": "random"})
        f = enc.tower(torch.zeros(2, 64, dtype=torch.long))
    assert f.shape == (2, 1152) and enc.dim == 1152 and enc.spec.resolution == 64
    assert len(enc.tower.transformer.resblocks) == 27


def test_tiny_contract():
    enc = ENTRY.build({"tiny": True})
    tokens = torch.randint(1, 1000, (3, 16), generator=torch.Generator().manual_seed(0))
    f = enc(tokens)
    assert f.shape == (3, TINY_EMBED) and f.dtype == torch.float32
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3))
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    enc.train()
    assert not enc.training
    singles = torch.cat([enc(tokens[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(singles, f, rtol=2e-2, atol=2e-2)
    assert enc.fingerprint != ENTRY.build({"tiny": True, "context_length": 8}).fingerprint


def test_missing_weights_fail_fast(cache):
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch siglip2-text"):
        ENTRY.build({})
    assert time.perf_counter() - t < 5


def test_cached_checkpoint_matches_open_clip_encode_text(cache):
    import open_clip
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    vision = {"width": 64, "layers": 1, "head_width": 32, "patch_size": 16, "image_size": 32}
    ref = open_clip.CustomTextCLIP(embed_dim=TINY_EMBED, vision_cfg=vision, text_cfg=TINY_TEXT).eval()
    snap = cache / "hf" / "hub" / "models--timm--ViT-SO400M-16-SigLIP2-256" / "snapshots" / "cafe"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "open_clip_model.safetensors"))
    cfg = {"embed_dim": TINY_EMBED, "vision_cfg": vision, "text_cfg": {**TINY_TEXT, "tokenizer_kwargs": {"clean": "canonicalize"}}}
    (snap / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    vocab = {"<pad>": 0, "a": 1, "cat": 2, "dog": 3, "<unk>": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(str(snap))

    enc = ENTRY.build({})
    assert enc.spec.revision == "cafe" and enc.dim == TINY_EMBED
    tokens = enc.tokenize(["a cat", "a dog dog"])
    assert tokens.tolist() == [[1, 2] + [0] * 14, [1, 3, 3] + [0] * 13]
    with torch.no_grad():
        expected = ref.encode_text(tokens, normalize=True)
        exact = torch.nn.functional.normalize(enc.tower(tokens), dim=-1)
        got = enc(["a cat", "a dog dog"])
    torch.testing.assert_close(exact, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, expected, rtol=3e-2, atol=3e-2)  # bf16 autocast
