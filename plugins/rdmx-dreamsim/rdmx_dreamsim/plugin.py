"""Entry point of rdmx-dreamsim: registers the ``dreamsim`` preset (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.represent.presets import PresetConfig, URLSource, pretrained_meta, preset_config, torch_hub_dir

ENSEMBLE_ZIP = ("https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints/"
                "dreamsim_ensemble_checkpoint.zip")
DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"
CHECKPOINT = "dreamsim ensemble v0.2.0 (dino_vitb16 + clip_vitb16 + open_clip_vitb16, LoRA)"
# the three ViT-B/16 backbones, and a tiny stand-in of the same layout (CPU tests)
BASE = {"embed_dim": 768, "depth": 12, "num_heads": 12, "proj_dim": 512}
TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "proj_dim": 16}


def embedding_dim(arch: dict) -> int:
    """DINO CLS (embed_dim) + CLIP and OpenCLIP projections (proj_dim each)."""
    return arch["embed_dim"] + 2 * arch["proj_dim"]


def dreamsim_dir() -> Path:
    """Where the DreamSim checkpoints live: $RDMX_DREAMSIM_HOME, else <torch hub>/dreamsim."""
    env = os.environ.get("RDMX_DREAMSIM_HOME")
    return Path(env).expanduser() if env else torch_hub_dir() / "dreamsim"


ENSEMBLE = URLSource(ENSEMBLE_ZIP, dreamsim_dir, "dreamsim_ensemble_checkpoint.zip", unzip_check=(
    "ensemble_lora/adapter_config.json", "clip_vitb16_pretrain.pth.tar", "open_clip_vitb16_pretrain.pth.tar"))
DINO = URLSource(DINO_URL, lambda: dreamsim_dir() / "checkpoints", "dino_vitbase16_pretrain.pth")
SOURCES = (ENSEMBLE, DINO)


class DreamSimConfig(PresetConfig):
    """DreamSim ensemble embedding. ``weights = "pretrained"`` reads the DreamSim checkpoint folder
    (``dreamsim_dir()``); a path names such a folder."""

    normalize_embeds: bool = Field(True, description="centre and L2-normalise the embedding (DreamSim default)")


@hookimpl
def rdmx_register_encoders(register):
    register(
        "dreamsim",
        "rdmx_dreamsim.encoder:build",
        config=preset_config(DreamSimConfig, "dreamsim"),
        description="DreamSim ensemble (DINO CLS + CLIP + OpenCLIP embeddings, LoRA-tuned), 1792-d",
        family="dreamsim",
        checkpoint=CHECKPOINT,
        resolution=lambda c: c.resolution or 224,
        dim=lambda c: embedding_dim(TINY if c.tiny else BASE),
        pooling="ensemble_embed",
        role_hint="train",
        **pretrained_meta(SOURCES),
    )
