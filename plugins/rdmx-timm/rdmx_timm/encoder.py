"""The timm encoder: a timm model created at the preset's resolution, pooled per the preset."""

from __future__ import annotations

import timm
import torch

from rdmx.represent.encoder import Encoder, EncoderSpec
from rdmx.represent.presets import resolve_weights, seeded
from rdmx_timm.presets import PRESETS, TimmPreset

PRESET_VERSION = "1"


class TimmEncoder(Encoder):
    """Features of a timm backbone: CLS token, mean of patch tokens, or timm's pre-logits head."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module):
        super().__init__(spec)
        self.model = model
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)
        if self.spec.pooling == "cls":
            return tokens[:, 0]
        if self.spec.pooling == "mean_patch":
            return tokens[:, self.model.num_prefix_tokens :].mean(dim=1)
        return self.model.forward_head(tokens, pre_logits=True)


def create_model(preset: TimmPreset, resolution: int, tiny: bool, file: str | None = None) -> torch.nn.Module:
    """The timm model (random init unless ``file``), classifier removed, accepting ``resolution``."""
    kwargs: dict = {"num_classes": 0}
    if preset.vit:
        kwargs["img_size"] = resolution
    if tiny:
        kwargs.update(preset.tiny)
    if file is None:
        return timm.create_model(preset.checkpoint, pretrained=False, **kwargs)
    # timm's own loader (classifier filtering, position-embedding resampling) from a local file only
    overlay = {"file": file, "hf_hub_id": None, "url": None, "source": ""}
    return timm.create_model(preset.checkpoint, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


def make_spec(preset: TimmPreset, config, dim: int, weights: str, revision: str) -> EncoderSpec:
    pooling = config.pooling or preset.pooling
    extra = (("tiny", True),) if config.tiny else ()
    return EncoderSpec(
        name=preset.name,
        family="timm",
        checkpoint=preset.checkpoint,
        dim=dim,
        resolution=config.resolution or preset.resolution,
        weights=weights,
        revision=revision,
        mean=preset.norm[0],
        std=preset.norm[1],
        pooling=pooling,
        dtype=preset.dtype,
        channels_last=preset.channels_last,
        preset_version=PRESET_VERSION,
        seed=config.seed if weights == "random" else None,
        extra=extra,
    )


def build(config) -> TimmEncoder:
    """Factory registered for every timm preset (``config.preset`` names the preset)."""
    preset = PRESETS[config.preset]
    resolution = config.resolution or preset.resolution
    w = resolve_weights(config, preset.name, preset.checkpoint, [preset.source], main=preset.source.files[0])
    if w.mode == "random":
        with seeded(config.seed):
            model = create_model(preset, resolution, config.tiny)
    else:
        model = create_model(preset, resolution, False, file=str(w.path))
    spec = make_spec(preset, config, model.num_features, w.spec_weights, w.revision)
    return TimmEncoder(spec, model)
