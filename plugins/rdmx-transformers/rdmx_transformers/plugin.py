"""Entry point of rdmx-transformers: registers ``webssl`` and ``radio`` (torch-free)."""

from __future__ import annotations

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.represent.presets import HFSource, PresetConfig, pretrained_meta, preset_config

WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
WEBSSL_REPO = "facebook/webssl-dino1b-full2b-224"
WEBSSL = HFSource(WEBSSL_REPO, (("config.json",), WEIGHTS))
RADIO_REPO = "nvidia/C-RADIOv3-L"
RADIO = HFSource(RADIO_REPO, (("config.json",), WEIGHTS), snapshot=True)

# WebSSL-DINO 1B: DINOv2 ViT with SwiGLU FFN (config.json of the checkpoint; used for random init)
WEBSSL_ARCH = {"hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24, "mlp_ratio": 4,
               "use_swiglu_ffn": True, "layerscale_value": 1e-5, "image_size": 224, "patch_size": 14,
               "layer_norm_eps": 1e-6}
WEBSSL_TINY = {**WEBSSL_ARCH, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


class WebSSLConfig(PresetConfig):
    """WebSSL-DINO 1B (transformers Dinov2Model), pooler output (final-norm CLS)."""


class RadioConfig(PresetConfig):
    """C-RADIOv3-L summary token. RADIO's model code lives in its Hub repo: opt in with
    ``trust_remote_code = true``. Random weights need that code in the local cache; no tiny model."""

    trust_remote_code: bool = Field(False, json_schema_extra={"runs_code": True},
                                    description="allow running the repo's model code (required)")


@hookimpl
def rdmx_register_encoders(register):
    register(
        "webssl",
        "rdmx_transformers.webssl:build",
        config=preset_config(WebSSLConfig, "webssl"),
        description="WebSSL-DINO 1B (full2b, 224), pooler output / CLS, ImageNet mean/std",
        family="transformers",
        checkpoint=WEBSSL_REPO,
        resolution=lambda c: c.resolution or 224,
        dim=lambda c: WEBSSL_TINY["hidden_size"] if c.tiny else WEBSSL_ARCH["hidden_size"],
        pooling="cls",
        role_hint="train",
        **pretrained_meta([WEBSSL]),
    )
    register(
        "radio",
        "rdmx_transformers.radio:build",
        config=preset_config(RadioConfig, "radio"),
        description="NVIDIA C-RADIOv3-L (remote code, opt in), summary token, normalises internally",
        family="transformers",
        checkpoint=RADIO_REPO,
        resolution=lambda c: c.resolution or 256,
        dim=3072,
        pooling="summary",
        role_hint="heldout",
        **pretrained_meta([RADIO]),
        remote_code=True,
    )
