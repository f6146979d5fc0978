"""The DreamSim ensemble built directly (its constructor always downloads).

Three ViT-B/16 backbones in DreamSim's own ViT class: DINO (CLS of the last block, before the
final norm), CLIP and OpenCLIP (ln_pre as ``pos_drop``, final-norm CLS times the projection;
CLIP uses QuickGELU). Each sees the image normalised with its own mean/std; the embeddings
are concatenated (768 + 512 + 512) and, by default, centred and L2-normalised. The LoRA
adapter of the DreamSim checkpoint is merged into the weights (W += s·B·A).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from dreamsim.feature_extraction.vision_transformer import VisionTransformer

from rdmx.errors import RdmxError
from rdmx.represent.encoder import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderSpec
from rdmx.represent.presets import load_state_dict, missing_error, resolve_weights, seeded
from rdmx_dreamsim.plugin import BASE, CHECKPOINT, SOURCES, TINY, dreamsim_dir, embedding_dim

PRESET_VERSION = "1"
BACKBONES = ("dino_vitb16", "clip_vitb16", "open_clip_vitb16")
NORMS = {"dino_vitb16": (IMAGENET_MEAN, IMAGENET_STD), "clip_vitb16": (CLIP_MEAN, CLIP_STD),
         "open_clip_vitb16": (CLIP_MEAN, CLIP_STD)}


class QuickGELU(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Backbone(torch.nn.Module):
    """One ensemble member; named ``model`` / ``proj`` as in DreamSim (so LoRA keys match)."""

    def __init__(self, kind: str, arch: dict):
        super().__init__()
        self.kind = kind
        vit = VisionTransformer(patch_size=16, embed_dim=arch["embed_dim"], depth=arch["depth"],
                                num_heads=arch["num_heads"], mlp_ratio=4, qkv_bias=True,
                                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
        if kind != "dino_vitb16":
            vit.pos_drop = torch.nn.LayerNorm(arch["embed_dim"])  # CLIP's ln_pre
            for m in vit.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    m.eps = 1e-5
            if kind == "clip_vitb16":
                for blk in vit.blocks:
                    blk.mlp.act = QuickGELU()
            self.proj = torch.nn.Parameter(torch.randn(arch["embed_dim"], arch["proj_dim"]) * arch["embed_dim"] ** -0.5)
        self.model = vit
        mean, std = NORMS[kind]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.kind == "dino_vitb16":
            tokens = self.model.prepare_tokens(x)
            for blk in self.model.blocks:
                tokens = blk(tokens)
            return tokens[:, 0]
        return self.model(x) @ self.proj


class DreamSimEncoder(Encoder):
    def __init__(self, spec: EncoderSpec, arch: dict, normalize_embeds: bool):
        super().__init__(spec)
        self.extractor_list = torch.nn.ModuleList(Backbone(k, arch) for k in BACKBONES)
        self.normalize_embeds = normalize_embeds

    def features(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.cat([b(x) for b in self.extractor_list], dim=1)
        if self.normalize_embeds:
            e = e.float()
            e = e - e.mean(dim=1, keepdim=True)
            e = e / e.norm(dim=1, keepdim=True)
        return e


def merge_lora(module: torch.nn.Module, adapter_dir: Path) -> int:
    """Merge a PEFT LoRA adapter (adapter_config.json + adapter_model.*) into ``module``; returns
    the number of merged weights. Keys are ``base_model.model.<module path>.lora_{A,B}.weight``."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    files = [adapter_dir / f for f in ("adapter_model.safetensors", "adapter_model.bin")]
    file = next((f for f in files if f.is_file()), None)
    if file is None:
        raise RdmxError(f"DreamSim LoRA adapter weights missing in {adapter_dir}")
    sd = load_state_dict(file)
    r = cfg["r"]
    scale = cfg["lora_alpha"] / (r**0.5 if cfg.get("use_rslora") else r)
    params = dict(module.named_parameters())
    merged = 0
    for key, a in sd.items():
        if not key.endswith("lora_A.weight"):
            continue
        path = key[: -len(".lora_A.weight")].removeprefix("base_model.model.")
        b = sd[key.replace("lora_A", "lora_B")]
        w = params.get(path + ".weight")
        if w is None:
            raise RdmxError(f"DreamSim LoRA adapter in {adapter_dir} targets '{path}', which the model lacks")
        delta = (b.flatten(1).double() @ a.flatten(1).double()).reshape(w.shape) * scale
        with torch.no_grad():
            w.add_(delta.to(w.dtype))
        merged += 1
    return merged


def load_pretrained(enc: DreamSimEncoder, folder: Path) -> None:
    """Base weights of the three backbones, then the ensemble LoRA, from a DreamSim folder."""
    dino, clip, oclip = enc.extractor_list
    dino.model.load_state_dict(load_state_dict(folder / "checkpoints" / "dino_vitbase16_pretrain.pth"))
    for member, name in ((clip, "clip_vitb16_pretrain.pth.tar"), (oclip, "open_clip_vitb16_pretrain.pth.tar")):
        sd = dict(load_state_dict(folder / name))
        with torch.no_grad():
            member.proj.copy_(sd.pop("proj"))
        member.model.load_state_dict(sd)
    merge_lora(enc, folder / "ensemble_lora")


def build(config) -> DreamSimEncoder:
    w = resolve_weights(config, "dreamsim", CHECKPOINT, SOURCES)
    arch = TINY if config.tiny else BASE
    spec = EncoderSpec(
        name="dreamsim",
        family="dreamsim",
        checkpoint=CHECKPOINT,
        dim=embedding_dim(arch),
        resolution=config.resolution or 224,
        weights=w.spec_weights,
        revision=w.revision,
        mean=(0.0, 0.0, 0.0),  # each backbone normalises with its own mean/std (in extra)
        std=(1.0, 1.0, 1.0),
        pooling="ensemble_embed",
        dtype="bfloat16",
        preset_version=PRESET_VERSION,
        seed=config.seed if w.mode == "random" else None,
        extra=(("backbone_norms", tuple((k, NORMS[k]) for k in BACKBONES)),
               ("normalize_embeds", config.normalize_embeds)) + ((("tiny", True),) if config.tiny else ()),
    )
    with seeded(config.seed):
        enc = DreamSimEncoder(spec, arch, config.normalize_embeds)
    if w.mode != "random":
        folder = dreamsim_dir() if w.mode == "cache" else w.path
        if not (folder / "ensemble_lora").is_dir():
            raise missing_error("dreamsim", CHECKPOINT, SOURCES)
        load_pretrained(enc, folder)
    return enc.freeze()
