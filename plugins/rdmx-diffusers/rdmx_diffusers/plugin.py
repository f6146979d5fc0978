"""Entry point of rdmx-diffusers: registers the ``flux-vae`` encoder preset (torch-free)."""

from __future__ import annotations

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.represent.presets import HFSource, PresetConfig, pretrained_meta, preset_config

REPO = "black-forest-labs/FLUX.1-schnell"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SOURCE = HFSource(REPO, (("config.json",), WEIGHT_FILES), subfolder="vae")
RESOLUTION = 256

# FLUX.1 VAE encoder architecture (vae/config.json of FLUX.1-schnell)
FLUX_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "latent_channels": 16,
    "use_quant_conv": False,
}
TINY_VAE = {**FLUX_VAE, "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4}


def feature_dim(config) -> int:
    """latent channels × (resolution / 8 / patch)²: the latent mean pooled over patch × patch cells."""
    grid = (config.resolution or RESOLUTION) // (8 * config.patch)
    return FLUX_VAE["latent_channels"] * grid * grid


class FluxVAEConfig(PresetConfig):
    """FLUX.1 VAE encoder: latent mean pooled over ``patch`` x ``patch`` latent cells."""

    patch: int = Field(4, ge=1, description="latent cells averaged per feature cell")


@hookimpl
def rdmx_register_encoders(register):
    register(
        "flux-vae",
        "rdmx_diffusers.encoder:build",
        config=preset_config(FluxVAEConfig, "flux-vae"),
        description="FLUX.1-schnell VAE encoder: latent mean, 4x4 patch mean -> 16x8x8 at 256 px (bilinear)",
        family="diffusers",
        checkpoint=f"{REPO}/vae",
        resolution=lambda c: c.resolution or RESOLUTION,
        dim=feature_dim,
        pooling="latent_mean_patch4",
        role_hint="heldout",
        **pretrained_meta([SOURCE]),
    )
