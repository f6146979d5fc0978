"""dreamsim: contract, real-size dim, and the ensemble embedding against DreamSim's own
PerceptualModel + PEFT LoRA (tiny backbones, same files)."""

from __future__ import annotations

import time
from functools import partial

import pytest
import torch

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx_dreamsim import encoder as ds_encoder
from rdmx_dreamsim.plugin import rdmx_register_encoders
from rdmx.testing import check_encoder_contract, isolate_weight_caches, registered_entry


def _entry():
    return registered_entry(rdmx_register_encoders, "rdmx-dreamsim")


ENTRY = _entry()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def test_panel_facts_and_real_size_on_meta():
    assert (ENTRY.declared("resolution", {}), ENTRY.declared("dim", {}), ENTRY.meta["role_hint"]) == (224, 1792, "train")
    assert ENTRY.declared("dim", {"tiny": True}) == 64
    enc = ENTRY.build({"weights": "random"}).to("meta")  # DreamSim's ViT init calls .item(): build on CPU
    f = enc.features(enc.preprocess(torch.empty(2, 3, 50, 50, device="meta")))
    assert f.shape == (2, 1792) and enc.dim == 1792


def test_tiny_contract():
    f = check_encoder_contract("dreamsim", {"tiny": True}, batch=3, size=40)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3), rtol=1e-4, atol=1e-4)  # normalize_embeds
    torch.testing.assert_close(f.mean(dim=1), torch.zeros(3), rtol=0, atol=1e-5)


def test_missing_weights_fail_fast(cache):
    assert ENTRY.meta["weights_available"]() is False
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError, match="rdmx weights fetch dreamsim"):
        ENTRY.build({})
    assert time.perf_counter() - t < 5


def test_embedding_matches_dreamsim_perceptual_model_with_peft_lora(tmp_path, monkeypatch):
    import dreamsim.feature_extraction.load_clip_as_dino as lc
    import dreamsim.feature_extraction.load_open_clip_as_dino as loc
    from dreamsim.feature_extraction.extractor import ViTExtractor
    from dreamsim.feature_extraction.vision_transformer import VisionTransformer
    from dreamsim.model import PerceptualModel
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(0)
    src = ds_encoder.DreamSimEncoder(ENTRY.build({"tiny": True}).spec, ds_encoder.TINY, True)
    folder = tmp_path / "ds"
    (folder / "checkpoints").mkdir(parents=True)
    dino, clip, oclip = src.extractor_list
    torch.save(dino.model.state_dict(), folder / "checkpoints" / "dino_vitbase16_pretrain.pth")
    for member, name in ((clip, "clip_vitb16_pretrain.pth.tar"), (oclip, "open_clip_vitb16_pretrain.pth.tar")):
        torch.save({"state_dict": {**member.model.state_dict(), "proj": member.proj.detach().clone()}}, folder / name)

    # DreamSim's own loaders and model, with its ViT-B factory shrunk to the tiny architecture
    def tiny_vit(patch_size=16, **kw):
        return VisionTransformer(patch_size=patch_size, embed_dim=32, depth=1, num_heads=2, mlp_ratio=4,
                                 qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **kw)

    monkeypatch.setattr(lc, "vit_base", tiny_vit)
    monkeypatch.setattr(loc, "vit_base", tiny_vit)

    def create_model(model_type, load_dir):
        if model_type == "dino_vitb16":
            m = tiny_vit()
            m.load_state_dict(torch.load(folder / "checkpoints" / "dino_vitbase16_pretrain.pth", weights_only=True))
            return m
        if model_type == "clip_vitb16":
            return lc.load_clip_as_dino(16, str(folder))
        return loc.load_open_clip_as_dino(16, str(folder))

    monkeypatch.setattr(ViTExtractor, "create_model", staticmethod(create_model))
    ref = PerceptualModel(model_type="dino_vitb16,clip_vitb16,open_clip_vitb16", feat_type="cls,embedding,embedding",
                          stride="16,16,16", lora=True, device="cpu", normalize_embeds=True)
    # DreamSim's embed uses layer index 11 for DINO; the tiny DINO has one block
    monkeypatch.setattr(PerceptualModel, "_extract_cls_and_patch",
                        lambda self, img, extractor_index=0: self.extractor_list[extractor_index].extract_descriptors(img, 0))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "fc1"], init_lora_weights=False, bias="none")
    peft_model = get_peft_model(ref, lora)
    peft_model.save_pretrained(str(folder / "ensemble_lora"))
    ref = PeftModel.from_pretrained(peft_model.base_model.model, str(folder / "ensemble_lora")).eval()

    enc = ds_encoder.DreamSimEncoder(src.spec, ds_encoder.TINY, True)
    ds_encoder.load_pretrained(enc, folder)
    enc.freeze()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        got = enc.features(enc.preprocess(x))  # float32, no autocast
        expected = ref.embed(x)
        unmerged = src.features(x)
    with pytest.raises(RdmxError, match="targets 'extractor_list.0.model.blocks.0.attn.qkv'"):
        ds_encoder.merge_lora(torch.nn.Linear(2, 2), folder / "ensemble_lora")
    assert (got - unmerged).abs().max() > 1e-3  # the LoRA changed the features
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
