"""Entry point of the rdmx-timm plugin: registers the timm presets (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.represent.presets import PresetConfig, pretrained_meta, preset_config
from rdmx_timm.presets import PRESETS


class TimmEncoderConfig(PresetConfig):
    """A timm preset; ``pooling`` overrides the preset's pooling."""

    pooling: Literal["cls", "mean_patch", "spatial_mean", "attn_pool", "head"] | None = Field(
        None, description="feature pooling override (see rdmx_timm.encoder)")


@hookimpl
def rdmx_register_encoders(register):
    for p in PRESETS.values():
        register(
            p.name,
            "rdmx_timm.encoder:build",
            config=preset_config(TimmEncoderConfig, p.name),
            description=p.description,
            family="timm",
            checkpoint=p.checkpoint,
            resolution=lambda c, p=p: c.resolution or p.resolution,
            dim=lambda c, p=p: p.tiny_dim if c.tiny else p.dim,
            pooling=p.pooling,
            role_hint=p.role,
            **pretrained_meta([p.source]),
        )
