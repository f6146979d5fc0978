"""The timm presets: checkpoint, resolution, pooling, normalisation (torch-free).

Mean/std are the values of each checkpoint's timm pretrained config, written out so that no
download is needed to know them. ``tiny`` holds the model kwargs of a small model of the same
architecture (CPU tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rdmx.represent.presets import HFSource

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

VIT_TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}


@dataclass(frozen=True)
class TimmPreset:
    name: str
    checkpoint: str  # timm model name with pretrained tag
    resolution: int
    pooling: str  # "cls" | "mean_patch" | "spatial_mean" | "attn_pool" | "head" (see rdmx_timm.encoder)
    dim: int
    norm: tuple[tuple[float, ...], tuple[float, ...]]
    role: str = ""  # "train" | "heldout" | "" (not in the paper panel)
    dtype: str = "bfloat16"
    channels_last: bool = False
    vit: bool = True  # created with dynamic_img_size / dynamic_img_pad (any input size)
    tiny: dict[str, Any] = field(default_factory=lambda: dict(VIT_TINY))
    description: str = ""

    @property
    def tiny_dim(self) -> int:
        """Feature dimension of the tiny model (its last width)."""
        return int(self.tiny["embed_dim"]) if "embed_dim" in self.tiny else int(self.tiny["dims"][-1])

    @property
    def source(self) -> HFSource:
        return HFSource("timm/" + self.checkpoint, (("model.safetensors", "pytorch_model.bin"),))


PRESETS: dict[str, TimmPreset] = {
    p.name: p
    for p in [
        TimmPreset("convnext", "convnextv2_base.fcmae_ft_in22k_in1k", 224, "spatial_mean", 1024, IMAGENET, "train",
                   channels_last=True, vit=False,
                   tiny={"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)},
                   description="ConvNeXt-V2 base (FCMAE, IN-22k→1k), spatial mean of the last stage (no head norm)"),
        TimmPreset("mae", "vit_large_patch16_224.mae", 224, "mean_patch", 1024, IMAGENET, "train",
                   description="MAE ViT-L/16, mean of patch tokens after the final norm"),
        TimmPreset("clip", "vit_large_patch14_clip_224.openai", 256, "cls", 1024, OPENAI_CLIP, "train",
                   description="OpenAI CLIP ViT-L/14 image tower at 256 (19×19 padded grid), CLS after ln_post (pre-projection)"),
        TimmPreset("dinov3", "vit_large_patch16_dinov3.lvd1689m", 224, "cls", 1024, IMAGENET, "train",
                   description="DINOv3 ViT-L/16 (LVD-1689M), CLS"),
        TimmPreset("pe-core", "vit_pe_core_large_patch14_336.fb", 224, "attn_pool", 1024, HALF, "train",
                   description="Perception Encoder core ViT-L/14 at 224, attention-pool head"),
        TimmPreset("siglip2", "vit_so400m_patch16_siglip_256.v2_webli", 224, "attn_pool", 1152, HALF, "train",
                   description="SigLIP2 SO400M/16 at 224, attention-pool head"),
        TimmPreset("aimv2", "aimv2_huge_patch14_224.apple_pt", 224, "mean_patch", 1536, OPENAI_CLIP, "train",
                   description="AIMv2 huge/14, mean of tokens"),
        TimmPreset("dinov2", "vit_large_patch14_dinov2.lvd142m", 256, "cls", 1024, IMAGENET, "heldout",
                   description="DINOv2 ViT-L/14 at 256 (19×19 padded grid), CLS"),
        TimmPreset("siglip", "vit_so400m_patch14_siglip_384.webli", 384, "attn_pool", 1152, HALF, "heldout",
                   description="SigLIP SO400M/14 at 384 (28×28 padded grid), attention-pool head"),
        # general presets (not in the paper panel)
        TimmPreset("dinov2-vits14", "vit_small_patch14_dinov2.lvd142m", 224, "cls", 384, IMAGENET,
                   description="DINOv2 ViT-S/14 at 224, CLS"),
        TimmPreset("dinov2-vitb14", "vit_base_patch14_dinov2.lvd142m", 224, "cls", 768, IMAGENET,
                   description="DINOv2 ViT-B/14 at 224, CLS"),
        TimmPreset("convnext-tiny", "convnextv2_tiny.fcmae_ft_in22k_in1k", 224, "spatial_mean", 768, IMAGENET,
                   channels_last=True, vit=False,
                   tiny={"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)},
                   description="ConvNeXt-V2 tiny (FCMAE, IN-22k→1k), spatial mean of the last stage (no head norm)"),
    ]
}
