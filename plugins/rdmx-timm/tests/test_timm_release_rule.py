"""Every timm panel preset against the iRDM release's feature rule, written out here.

The release creates each timm encoder with ``dynamic_img_size=True, dynamic_img_pad=True``
(falling back to plain creation for models that refuse the keywords), resizes [0, 1] images
bicubic with antialias to the encoder's input size, normalises with the pretrained config's
mean/std and pools ``forward_features``: a CNN map by its spatial mean; a ViT by the mean of
its patch tokens (AVG), by the attention-pool head when an ATTN model also has prefix tokens,
else by token 0 when it has prefix tokens, else by its pool head. On tiny random-weight copies
(the same weights loaded into both) rdmx's token grids and pooled features must be the same.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from rdmx.registry import Entry
from rdmx_timm.plugin import TimmEncoderConfig, rdmx_register_encoders

# the release's panel rows for timm: checkpoint, input size, conceptual pool (its registry)
RELEASE = {
    "convnext": ("convnextv2_base.fcmae_ft_in22k_in1k", 224, "avg"),
    "mae": ("vit_large_patch16_224.mae", 224, "avg"),
    "clip": ("vit_large_patch14_clip_224.openai", 256, "cls"),
    "dinov3": ("vit_large_patch16_dinov3.lvd1689m", 224, "cls"),
    "pe-core": ("vit_pe_core_large_patch14_336.fb", 224, "attn"),
    "siglip2": ("vit_so400m_patch16_siglip_256.v2_webli", 224, "attn"),
    "aimv2": ("aimv2_huge_patch14_224.apple_pt", 224, "avg"),
    "dinov2": ("vit_large_patch14_dinov2.lvd142m", 256, "cls"),
    "siglip": ("vit_so400m_patch14_siglip_384.webli", 384, "attn"),
}


def _entries():
    got = {}
    rdmx_register_encoders(lambda name, factory, config, description="", **meta: got.__setitem__(name, (factory, config)))
    return got


ENTRIES = _entries()


def build(name, **cfg):
    factory, config = ENTRIES[name]
    return Entry("encoders", name, factory, config, "", "rdmx-timm", "0", {}).build(cfg)


def release_model(checkpoint: str, tiny_kwargs: dict) -> torch.nn.Module:
    kwargs = dict(pretrained=False, num_classes=0, **tiny_kwargs)
    try:
        return timm.create_model(checkpoint, dynamic_img_size=True, dynamic_img_pad=True, **kwargs)
    except TypeError:  # models that do not take the dynamic-size keywords
        return timm.create_model(checkpoint, **kwargs)


def release_features(model, x01: torch.Tensor, size: int, pool: str, mean, std) -> torch.Tensor:
    x = x01
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    feats = model.forward_features(x)
    if feats.ndim == 4:
        return feats.mean(dim=[2, 3])
    prefix = getattr(model, "num_prefix_tokens", 0)
    has_attn_pool = getattr(model, "attn_pool", None) is not None
    if pool == "avg":
        return feats[:, prefix:].mean(1)
    if pool == "attn" and prefix > 0 and has_attn_pool:
        return model.attn_pool(feats)
    if prefix > 0:
        return feats[:, 0]
    if has_attn_pool:
        return (getattr(model, "pool", None) or getattr(model, "_pool"))(feats)
    return feats[:, prefix:].mean(1)


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_features_follow_the_release_rule(name):
    checkpoint, size, pool = RELEASE[name]
    enc = build(name, tiny=True, seed=3)
    assert enc.spec.checkpoint == checkpoint and enc.spec.resolution == size
    from rdmx_timm.presets import PRESETS

    ref = release_model(checkpoint, PRESETS[name].tiny)
    ref.load_state_dict(enc.model.state_dict())
    ref.eval()
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = release_features(ref, x, size, pool, enc.spec.mean, enc.spec.std)
        got = enc.features(enc.preprocess(x))  # float32, outside autocast: bit-comparable
    assert got.shape == want.shape == (2, enc.model.num_features)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, patch, tokens",
    [("clip", 14, 1 + 19 * 19), ("dinov2", 14, 1 + 19 * 19), ("siglip", 14, 28 * 28), ("siglip2", 16, 14 * 14),
     ("pe-core", 14, 1 + 16 * 16), ("mae", 16, 1 + 14 * 14), ("aimv2", 14, 16 * 16), ("dinov3", 16, 5 + 14 * 14)],
)
def test_patch_grids_are_padded_not_cropped(name, patch, tokens):
    """⌈size / patch⌉² patch tokens: CLIP at 256 sees 19×19 (362 tokens with CLS), not 18×18."""
    enc = build(name, tiny=True)
    size = enc.spec.resolution
    assert math.ceil(size / patch) ** 2 + enc.model.num_prefix_tokens == tokens
    with torch.no_grad():
        out = enc.model.forward_features(enc.preprocess(torch.rand(1, 3, 64, 64)))
    assert out.shape[1] == tokens


def test_convnext_pooling_is_the_plain_spatial_mean_without_head_norm():
    enc = build("convnext", tiny=True, seed=1)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fmap = enc.model.forward_features(enc.preprocess(x))
        head = enc.model.forward_head(fmap, pre_logits=True)
        got = enc.features(enc.preprocess(x))
    torch.testing.assert_close(got, fmap.mean(dim=(2, 3)), rtol=0, atol=0)
    assert not torch.allclose(got, head, atol=1e-3)  # timm's head adds a LayerNorm the release never applies


def test_pooling_names_are_checked_against_the_model():
    with pytest.raises(Exception, match="attention-pool"):
        build("mae", tiny=True, pooling="attn_pool")
    with pytest.raises(Exception, match="CNN"):
        build("clip", tiny=True, pooling="spatial_mean")
    assert TimmEncoderConfig.model_fields["pooling"].annotation is not None
