"""Every field that changes an encoder's features changes its fingerprint; presets get distinct ones."""

from __future__ import annotations

import pytest

from rdmx.represent.encoder import EncoderSpec

BASE = EncoderSpec(name="x", family="timm", checkpoint="vit_large_patch14_dinov2.lvd142m", dim=1024,
                   resolution=256, revision="abc", pooling="cls")

CHANGES = {
    "checkpoint": "vit_base_patch14_dinov2.lvd142m",
    "revision": "abd",
    "weights": "/some/file.safetensors",
    "resolution": 224,
    "resize": "bilinear",
    "antialias": False,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "pooling": "mean_patch",
    "dtype": "bfloat16",
    "preset_version": "2",
    "seed": 7,
    "extra": (("tiny", True),),
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_each_field_changes_the_fingerprint(field):
    assert BASE.with_(**{field: CHANGES[field]}).fingerprint() != BASE.fingerprint()


def test_fingerprint_is_stable_and_value_based():
    same = EncoderSpec(**{**BASE.__dict__})
    assert same.fingerprint() == BASE.fingerprint() and len(BASE.fingerprint()) == 16
    assert BASE.with_(mean=(0.485, 0.456, 0.4061)).fingerprint() != BASE.with_(mean=(0.485, 0.456, 0.406)).fingerprint()


# Fingerprints of every registered encoder as the presets shipped them (real size, weights =
# "random"; and tiny where the preset has a tiny model). A fingerprint is the hash of the whole
# spec, so an equal fingerprint means the same resize, normalisation, pooling, precision and
# weights — the same features from the same code; and cached reference features stay valid.
# Changing a preset's spec on purpose: update these and say why (its caches are rebuilt).
# Last change: preset version 2 (issue 11: the release's resize, padding, pooling and TF-1 Inception).
FULL = {
    "aimv2": "f3ea8b4963516938", "clip": "d73bc2334afce70d", "convnext": "f51ccfbcbd235d1c",
    "convnext-tiny": "d3dae57351d77598", "dinov2": "87fb0fa740d46a50", "dinov2-vitb14": "6c731b5462496259",
    "dinov2-vits14": "9da731582b5fc1fe", "dinov3": "ac03f2baf0607607", "dreamsim": "c60797d5426fd22e",
    "example-hog": "d7696db9a575d28f", "flux-vae": "d57649903d81b862", "identity": "5e01cfb3442e36e2",
    "inception": "af19294d70650ef8", "mae": "a91305a3b14cf056", "pe-core": "675b882089c65240",
    "pixels": "6afa5a0b221ebf87", "siglip": "83dda0c53fa96e77", "siglip2": "2c3421bbdeb03374",
    "siglip2-text": "7c50a3dda4006e1d", "toy-conv": "183e27aa04ab126b", "webssl": "172d318149a6fa87",
}
TINY = {
    "aimv2": "347af51cce635638", "clip": "1a87747efd97630e", "convnext": "1ee0c1fdf06570dd",
    "convnext-tiny": "9df1728c60088c6f", "dinov2": "f58ad0d7b9e1df09", "dinov2-vitb14": "4408cda1a3f84c23",
    "dinov2-vits14": "d69b4b4fb0d0ae4c", "dinov3": "15cbeac7601098c1", "dreamsim": "8258d48e5de75334",
    "example-hog": "d7696db9a575d28f", "flux-vae": "9460c565e022a0b0", "identity": "5e01cfb3442e36e2",
    "inception": "3781a71c472da256", "mae": "fc00c923f41c4881", "pe-core": "82ba4cea26bda1c8",
    "pixels": "6afa5a0b221ebf87", "siglip": "6f660e738c6e9b1a", "siglip2": "8c00ddeb9e0310c7",
    "siglip2-text": "8b78fa0617b57418", "toy-conv": "183e27aa04ab126b", "webssl": "004d0c86035da9cc",
}


@pytest.fixture(scope="module")
def built():
    """name -> (real-size fingerprint, tiny fingerprint or None), radio excluded (remote code)."""
    import torch

    from rdmx.plugins import get_plugins

    reg = get_plugins().registry("encoders")
    out = {}
    for n in reg.names():
        if n == "radio":
            continue
        e = reg.get(n)
        fields = e.config.model_fields
        cfg = {"weights": "random"} if "weights" in fields else {}
        if e.meta.get("family") == "dreamsim":  # DreamSim's ViT init calls .item(): not on meta
            full = e.build(cfg).fingerprint
        else:
            with torch.device("meta"):
                full = e.build(cfg).fingerprint
        tiny = e.build({**cfg, "tiny": True}).fingerprint if "tiny" in fields else None
        out[n] = (full, tiny)
    return out


def test_registered_presets_have_distinct_fingerprints(built):
    presets = {n: fp for n, (fp, _) in built.items() if n in FULL and n not in ("identity", "pixels", "toy-conv",
                                                                             "example-hog")}
    assert len(presets) >= 13
    assert len(set(presets.values())) == len(presets)


def test_every_shipped_encoder_keeps_its_spec(built):
    """The honest EncoderSpec defaults (float32, no pooling, no weights) changed no shipped encoder."""
    assert {n: fp for n, (fp, _) in built.items() if n in FULL} == FULL
    assert {n: tiny or fp for n, (fp, tiny) in built.items() if n in TINY} == TINY


def test_plain_spec_defaults_assume_nothing():
    spec = EncoderSpec(name="mine", family="mine", checkpoint="(none)", dim=8, resolution=32)
    assert (spec.dtype, spec.pooling, spec.weights) == ("float32", "none", "none")
