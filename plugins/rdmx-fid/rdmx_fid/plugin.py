"""Entry point of rdmx-fid: registers the ``inception`` preset (torch-free)."""

from __future__ import annotations

from rdmx.hookspecs import hookimpl
from rdmx.represent.presets import PresetConfig, URLSource, pretrained_meta, preset_config, torch_hub_dir

CHECKPOINT = "pt_inception-2015-12-05-6726825d.pth"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + CHECKPOINT
SOURCE = URLSource(URL, lambda: torch_hub_dir() / "checkpoints", CHECKPOINT)
RESOLUTION = 299
TINY_RESOLUTION = 75  # the smallest input Inception-v3 accepts


class InceptionConfig(PresetConfig):
    """FID Inception-v3. ``tiny`` keeps the architecture (its widths are the FID graph) and runs at 75 px."""


@hookimpl
def rdmx_register_encoders(register):
    register(
        "inception",
        "rdmx_fid.encoder:build",
        config=preset_config(InceptionConfig, "inception"),
        description="FID Inception-v3 (TF-compatible weights), pool3 average, float32",
        family="pytorch-fid",
        checkpoint=CHECKPOINT,
        resolution=lambda c: c.resolution or (TINY_RESOLUTION if c.tiny else RESOLUTION),
        dim=2048,
        pooling="avg_pool3",
        role_hint="train",
        **pretrained_meta([SOURCE]),
    )
