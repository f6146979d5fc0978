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
FULL = {
    "aimv2": "10335ea41dc62ba9", "clip": "04fbb8c3e8efea70", "convnext": "af493236d2b910a1",
    "convnext-tiny": "584cd7569b2aa9f5", "dinov2": "645f1412f2d95476", "dinov2-vitb14": "b6f9d74f4df48332",
    "dinov2-vits14": "c4ee51cf2489602e", "dinov3": "3a24c0a96d77d494", "dreamsim": "c60797d5426fd22e",
    "example-hog": "d7696db9a575d28f", "flux-vae": "d57649903d81b862", "identity": "5e01cfb3442e36e2",
    "inception": "e87d4726593424f6", "mae": "cc7235de3b99859a", "pe-core": "c6767e2b1f239151",
    "pixels": "6afa5a0b221ebf87", "siglip": "af01c5190e61a7ed", "siglip2": "4ca561d337e3a93a",
    "siglip2-text": "7c50a3dda4006e1d", "toy-conv": "183e27aa04ab126b", "webssl": "172d318149a6fa87",
}
TINY = {
    "aimv2": "97636b1a2261bc58", "clip": "81d1f3ee36d62f29", "convnext": "d6571cc90749c0c5",
    "convnext-tiny": "09cdd9dddc2bb1e5", "dinov2": "ea41bb3a2c0c9d33", "dinov2-vitb14": "767025e8846dd369",
    "dinov2-vits14": "d814a156bcfac370", "dinov3": "cd797980e9630501", "dreamsim": "8258d48e5de75334",
    "example-hog": "d7696db9a575d28f", "flux-vae": "9460c565e022a0b0", "identity": "5e01cfb3442e36e2",
    "inception": "b47a98f6c977ec2e", "mae": "60e1fa63563c4b53", "pe-core": "0ec01fa2972db583",
    "pixels": "6afa5a0b221ebf87", "siglip": "ae92801b3dcea3b6", "siglip2": "4f3f07b334d2cc29",
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
