"""The timm encoder: a timm model created as the iRDM release creates it, pooled per the preset.

ViTs are created at their checkpoint's native size with ``dynamic_img_size=True,
dynamic_img_pad=True``: an input of any size is zero-padded (right/bottom, after
normalisation) to a multiple of the patch and the position embeddings are resampled to the
resulting grid at every forward. CLIP ViT-L/14 at 256 px therefore sees ⌈256/14⌉² = 19² patch
tokens (+ CLS = 362), not the 18² that a model built for 256 px (the remainder cropped by the
patch convolution) would. CNNs (ConvNeXt) take any size as they are.

Poolings (the release's rule, written once here):

* ``cls``          token 0 of ``forward_features`` (CLS / first prefix token);
* ``mean_patch``   mean of the patch tokens (prefix tokens skipped);
* ``spatial_mean`` spatial mean of a CNN's ``forward_features`` map, no head norm;
* ``attn_pool``    the model's attention-pooling head on ``forward_features``, nothing after;
* ``head``         timm's ``forward_head(pre_logits=True)`` (pool + fc_norm; not used by the panel).
"""

from __future__ import annotations

import timm
import torch

from rdmx.errors import RdmxError
from rdmx.represent.encoder import Encoder, EncoderSpec
from rdmx.represent.presets import resolve_weights, seeded
from rdmx_timm.presets import PRESETS, TimmPreset

# 2: dynamic-size ViTs (padded patch grids, position embeddings resampled per forward) and the
#    release's poolings (ConvNeXt spatial mean without the head norm; attention pool heads alone)
PRESET_VERSION = "2"


class TimmEncoder(Encoder):
    """Features of a timm backbone under one of the poolings of the module docstring."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module):
        super().__init__(spec)
        self.model = model
        pooling = spec.pooling
        if pooling == "spatial_mean" and getattr(model, "num_prefix_tokens", None) is not None:
            raise RdmxError(f"{spec.name}: pooling 'spatial_mean' is for CNN feature maps; this model is a ViT")
        if pooling == "attn_pool" and getattr(model, "attn_pool", None) is None:
            raise RdmxError(f"{spec.name}: pooling 'attn_pool' needs a model with an attention-pool head")
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_features(x)
        pooling = self.spec.pooling
        if pooling == "spatial_mean" or (out.ndim == 4 and pooling != "head"):
            return out.mean(dim=(2, 3))
        if pooling == "cls":
            return out[:, 0]
        if pooling == "mean_patch":
            return out[:, self.model.num_prefix_tokens :].mean(dim=1)
        if pooling == "attn_pool":
            return self.model.attn_pool(out)
        return self.model.forward_head(out, pre_logits=True)


def create_model(preset: TimmPreset, resolution: int, tiny: bool, file: str | None = None) -> torch.nn.Module:
    """The timm model (random init unless ``file``), classifier removed.

    ViTs keep the checkpoint's native ``img_size`` and accept ``resolution`` (any size) through
    dynamic patch padding and position-embedding resampling, as the iRDM release creates them."""
    kwargs: dict = {"num_classes": 0}
    if preset.vit:
        kwargs.update(dynamic_img_size=True, dynamic_img_pad=True)
    if tiny:
        kwargs.update(preset.tiny)
    if file is None:
        return timm.create_model(preset.checkpoint, pretrained=False, **kwargs)
    # timm's own loader (classifier filtering, position-embedding handling) from a local file only
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
