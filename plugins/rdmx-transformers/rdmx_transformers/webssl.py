"""WebSSL-DINO as an encoder: transformers' Dinov2Model, pooler output (layer-normed CLS)."""

from __future__ import annotations

import torch
from transformers import Dinov2Config, Dinov2Model

from rdmx.represent.encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderSpec
from rdmx.represent.presets import load_state_dict, resolve_weights, seeded
from rdmx_transformers.plugin import WEBSSL, WEBSSL_ARCH, WEBSSL_REPO, WEBSSL_TINY

PRESET_VERSION = "1"


class WebSSLEncoder(Encoder):
    def __init__(self, spec: EncoderSpec, model: Dinov2Model):
        super().__init__(spec)
        self.model = model
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).pooler_output


def build(config) -> WebSSLEncoder:
    w = resolve_weights(config, "webssl", WEBSSL_REPO, [WEBSSL])
    if w.mode == "random":
        cfg = Dinov2Config(**(WEBSSL_TINY if config.tiny else WEBSSL_ARCH))
        with seeded(config.seed):
            model = Dinov2Model(cfg)
    elif w.path.is_file():  # a bare state dict (safetensors or torch) for the 1B architecture
        model = Dinov2Model(Dinov2Config(**WEBSSL_ARCH))
        model.load_state_dict(load_state_dict(w.path))
    else:  # a cached snapshot, or a user folder in from_pretrained layout
        model = Dinov2Model.from_pretrained(str(w.path), local_files_only=True)
    spec = EncoderSpec(
        name="webssl",
        family="transformers",
        checkpoint=WEBSSL_REPO,
        dim=model.config.hidden_size,
        resolution=config.resolution or 224,
        weights=w.spec_weights,
        revision=w.revision,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="cls",
        dtype="bfloat16",
        preset_version=PRESET_VERSION,
        seed=config.seed if w.mode == "random" else None,
        extra=(("tiny", True),) if config.tiny else (),
    )
    return WebSSLEncoder(spec, model.eval())
