"""The timm presets: panel facts, tiny-model contract, real-size dims on meta, weight loading."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx_timm.plugin import rdmx_register_encoders
from rdmx.testing import check_encoder_contract, isolate_weight_caches, registered_entries

# The paper panel (shared/reference/panel.md), written out independently of the presets module.
PANEL = {
    "convnext": ("convnextv2_base.fcmae_ft_in22k_in1k", 224, 1024, "train"),
    "mae": ("vit_large_patch16_224.mae", 224, 1024, "train"),
    "clip": ("vit_large_patch14_clip_224.openai", 256, 1024, "train"),
    "dinov3": ("vit_large_patch16_dinov3.lvd1689m", 224, 1024, "train"),
    "pe-core": ("vit_pe_core_large_patch14_336.fb", 224, 1024, "train"),
    "siglip2": ("vit_so400m_patch16_siglip_256.v2_webli", 224, 1152, "train"),
    "aimv2": ("aimv2_huge_patch14_224.apple_pt", 224, 1536, "train"),
    "dinov2": ("vit_large_patch14_dinov2.lvd142m", 256, 1024, "heldout"),
    "siglip": ("vit_so400m_patch14_siglip_384.webli", 384, 1152, "heldout"),
}
POOLING = {"convnext": "spatial_mean", "mae": "mean_patch", "clip": "cls", "dinov3": "cls", "pe-core": "attn_pool",
           "siglip2": "attn_pool", "aimv2": "mean_patch", "dinov2": "cls", "siglip": "attn_pool"}


ENTRIES = registered_entries(rdmx_register_encoders, "rdmx-timm")


def build(name, **cfg):
    return ENTRIES[name].build(cfg)


def test_panel_presets_match_the_paper():
    for name, (ckpt, res, dim, role) in PANEL.items():
        e = ENTRIES[name]
        meta = e.meta
        assert (meta["checkpoint"], e.declared("resolution", {}), e.declared("dim", {}), meta["role_hint"]) == (
            ckpt, res, dim, role)
        assert e.declared("resolution", {"resolution": 64}) == 64 and e.declared("dim", {"tiny": True}) == 32
        assert meta["pooling"] == POOLING[name]
        assert meta["family"] == "timm" and meta["weights"] == "pretrained"


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_normalisation_is_the_checkpoints_pretrained_config(name):
    enc_meta = ENTRIES[name].meta
    cfg = get_pretrained_cfg(enc_meta["checkpoint"])
    with torch.device("meta"):
        enc = build(name, weights="random")
    assert enc.spec.mean == pytest.approx(cfg.mean) and enc.spec.std == pytest.approx(cfg.std)
    assert enc.spec.resize == "bicubic" and enc.spec.antialias


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_real_size_dim_on_meta(name):
    entry = ENTRIES[name]
    with torch.device("meta"):
        enc = build(name, weights="random")
        f = enc.features(enc.preprocess(torch.empty(2, 3, 97, 97)))
    assert tuple(f.shape) == (2, entry.declared("dim", {})) == (2, enc.dim)
    assert enc.spec.resolution == entry.declared("resolution", {})
    assert enc.spec.dtype == "bfloat16"
    assert enc.spec.channels_last == name.startswith("convnext")


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_tiny_contract(name):
    f = check_encoder_contract(name, {"weights": "random", "tiny": True, "seed": 1}, batch=3, size=40)
    assert f.shape == (3, 32)
    spec = build(name, weights="random", tiny=True, seed=1).spec
    assert spec.weights == "random" and spec.seed == 1


def test_seed_controls_random_init():
    a = build("mae", tiny=True, seed=0)
    b = build("mae", tiny=True, seed=0)
    c = build("mae", tiny=True, seed=1)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_pooling_modes_match_manual_reductions():
    x = torch.rand(2, 3, 50, 50)
    enc = build("dinov2", tiny=True, pooling="mean_patch")
    cls = build("dinov2", tiny=True, pooling="cls")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = enc.model.forward_features(enc.preprocess(x))
    assert enc.model.num_prefix_tokens == 1
    torch.testing.assert_close(enc(x), tokens[:, 1:].float().mean(1), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(cls(x), tokens[:, 0].float(), rtol=0, atol=0)
    assert enc.fingerprint != cls.fingerprint


def test_resolution_override_reaches_model_and_fingerprint():
    a = build("siglip2", tiny=True)
    b = build("siglip2", tiny=True, resolution=112)
    assert a.spec.resolution == 224 and b.spec.resolution == 112
    assert a.fingerprint != b.fingerprint
    seen = []
    hook = b.model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    assert b(torch.rand(1, 3, 64, 64)).shape == (1, b.dim)
    hook.remove()
    assert seen == [(112, 112)]


def test_unknown_option_is_rejected():
    with pytest.raises(Exception, match="extra"):
        build("mae", tiny=True, depth=3)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def test_missing_pretrained_weights_fail_fast(empty_cache):
    assert ENTRIES["dinov2"].meta["weights_available"]() is False
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError) as err:
        build("dinov2")
    assert time.perf_counter() - t < 5
    msg = str(err.value)
    assert "dinov2" in msg and "vit_large_patch14_dinov2.lvd142m" in msg and "rdmx weights fetch dinov2" in msg


def test_bad_weights_path_is_a_user_error(empty_cache):
    with pytest.raises(RdmxError, match="neither"):
        build("mae", weights=str(empty_cache / "nope.safetensors"))


def test_pretrained_from_hub_cache_resamples_position_embedding(empty_cache):
    """A vits14 saved at timm's native 518 px loads at the preset's 224 px from the hub cache layout."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    src = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=518)
    repo = empty_cache / "hf" / "hub" / "models--timm--vit_small_patch14_dinov2.lvd142m"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(snap / "model.safetensors"))
    assert ENTRIES["dinov2-vits14"].meta["weights_available"]() is True

    enc = build("dinov2-vits14")
    assert enc.spec.weights == "pretrained" and enc.spec.revision == "0123abcd" and enc.spec.seed is None
    torch.testing.assert_close(enc.model.blocks[5].mlp.fc1.weight, src.blocks[5].mlp.fc1.weight, rtol=0, atol=0)
    # created as the release creates it: the native 37×37 grid is kept and resampled at every forward
    torch.testing.assert_close(enc.model.pos_embed, src.pos_embed, rtol=0, atol=0)
    tokens = torch.zeros(1, 16, 16, src.embed_dim)  # a 224-px input's patch grid (NHWC), all zero
    with torch.no_grad():
        resampled = enc.model._pos_embed(tokens)[:, 1:]
    # the resampled grid is a resize of the source grid: check against an independent float64 resize
    grid = src.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2).double()
    ref = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic", antialias=True, align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(1, 256, -1).float()
    torch.testing.assert_close(resampled, ref, rtol=1e-4, atol=1e-4)

    by_path = build("dinov2-vits14", weights=str(snap / "model.safetensors"))
    assert by_path.spec.weights.endswith("model.safetensors") and len(by_path.spec.revision) == 16
    assert by_path.fingerprint != enc.fingerprint
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(by_path(x), enc(x), rtol=0, atol=0)
