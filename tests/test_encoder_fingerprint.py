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
    "dtype": "float32",
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


def test_registered_presets_have_distinct_fingerprints():
    """Built on the meta device (no memory, no weights): every preset's spec is distinct."""
    import torch

    from rdmx.plugins import get_plugins

    reg = get_plugins().registry("encoders")
    names = [n for n in reg.names() if reg.get(n).meta.get("family") in
             {"timm", "pytorch-fid", "diffusers", "transformers", "dreamsim"} and n != "radio"]
    assert len(names) >= 13
    prints = {}
    for n in names:
        if reg.get(n).meta["family"] == "dreamsim":  # DreamSim's ViT init calls .item(): not on meta
            prints[n] = reg.get(n).build({"weights": "random"}).fingerprint
            continue
        with torch.device("meta"):
            prints[n] = reg.get(n).build({"weights": "random"}).fingerprint
    assert len(set(prints.values())) == len(prints)
