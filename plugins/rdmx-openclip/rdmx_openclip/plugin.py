"""Entry point of rdmx-openclip: registers text towers as encoders with ``modality="text"`` (torch-free)."""

from __future__ import annotations

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.represent.presets import HFSource, PresetConfig, pretrained_meta, preset_config

SIGLIP2_MODEL = "ViT-SO400M-16-SigLIP2-256"
SIGLIP2_REPO = "timm/ViT-SO400M-16-SigLIP2-256"
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
SIGLIP2 = HFSource(SIGLIP2_REPO, (WEIGHTS, ("tokenizer.json", "tokenizer_config.json", "spiece.model")),
                   snapshot=True)
TINY_TEXT = {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0,
             "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6},
             "act_kwargs": {"approximate": "tanh"}}
TINY_EMBED = 16


class TextTowerConfig(PresetConfig):
    """An open_clip text tower; features are L2-normalised. ``resolution`` is unused for text."""

    context_length: int | None = Field(None, ge=1, description="token context length override")
    tokenizer: str | None = Field(
        None, description="a local Hugging Face tokenizer directory (default: the checkpoint's); with random "
        "weights it lets strings be encoded")


@hookimpl
def rdmx_register_encoders(register):
    register(
        "siglip2-text",
        "rdmx_openclip.text:build",
        config=preset_config(TextTowerConfig, "siglip2-text"),
        description="SigLIP2 SO400M/16-256 text tower (open_clip), last-token pool + projection, L2-normalised",
        family="open_clip",
        checkpoint=f"hf-hub:{SIGLIP2_REPO}",
        resolution=None,  # text: see context_length
        context_length=64,
        dim=lambda c: TINY_EMBED if c.tiny else 1152,
        pooling="last",
        role_hint="text",
        **pretrained_meta([SIGLIP2], modality="text"),
    )
