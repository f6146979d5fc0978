"""The FLUX VAE as an encoder: only the VAE's encoder half is built and loaded."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import Encoder as VAEEncoderNet

from rdmx.errors import RdmxError
from rdmx.represent.encoder import HALF_MEAN, HALF_STD, Encoder, EncoderSpec
from rdmx.represent.presets import load_state_dict, resolve_weights, seeded
from rdmx_diffusers.plugin import FLUX_VAE, REPO, RESOLUTION, SOURCE, TINY_VAE, WEIGHT_FILES

PRESET_VERSION = "1"
DOWNSAMPLE = 8  # four encoder blocks, three of them downsample by 2


def vae_encoder(arch: dict) -> torch.nn.ModuleDict:
    """The encoder network (+ quant_conv when the VAE has one), named as in AutoencoderKL."""
    n = len(arch["block_out_channels"])
    parts = {
        "encoder": VAEEncoderNet(
            in_channels=3,
            out_channels=arch["latent_channels"],
            down_block_types=("DownEncoderBlock2D",) * n,
            block_out_channels=tuple(arch["block_out_channels"]),
            layers_per_block=arch["layers_per_block"],
            norm_num_groups=arch["norm_num_groups"],
            act_fn="silu",
            double_z=True,
        )
    }
    if arch.get("use_quant_conv"):
        c = 2 * arch["latent_channels"]
        parts["quant_conv"] = torch.nn.Conv2d(c, c, 1)
    return torch.nn.ModuleDict(parts)


class FluxVAEEncoder(Encoder):
    """Features: the posterior mean latent, averaged over ``patch`` x ``patch`` cells, flattened."""

    def __init__(self, spec: EncoderSpec, net: torch.nn.ModuleDict, latent_channels: int, patch: int):
        super().__init__(spec)
        self.net = net
        self.latent_channels = latent_channels
        self.patch = patch
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        moments = self.net["encoder"](x)
        if "quant_conv" in self.net:
            moments = self.net["quant_conv"](moments)
        mean = moments[:, : self.latent_channels]
        return F.avg_pool2d(mean, self.patch).flatten(1)


def _arch_from_config(path) -> dict:
    cfg = json.loads(path.read_text())
    return {k: cfg.get(k, FLUX_VAE[k]) for k in FLUX_VAE}


def build(config) -> FluxVAEEncoder:
    resolution = config.resolution or RESOLUTION
    cell = DOWNSAMPLE * config.patch
    if resolution % cell:
        raise RdmxError(f"encoder 'flux-vae': resolution {resolution} must be a multiple of {cell} (8 x patch)")
    w = resolve_weights(config, "flux-vae", f"{REPO}/vae", [SOURCE], main=WEIGHT_FILES)
    if w.mode == "random":
        arch = TINY_VAE if config.tiny else FLUX_VAE
        with seeded(config.seed):
            net = vae_encoder(arch)
    else:
        cfg_file = w.path.parent / "config.json"
        arch = _arch_from_config(cfg_file) if cfg_file.is_file() else FLUX_VAE
        net = vae_encoder(arch)
        sd = load_state_dict(w.path)
        keep = {k: v for k, v in sd.items() if k.split(".", 1)[0] in net}
        net.load_state_dict(keep)
    grid = resolution // cell
    spec = EncoderSpec(
        name="flux-vae",
        family="diffusers",
        checkpoint=f"{REPO}/vae",
        dim=arch["latent_channels"] * grid * grid,
        resolution=resolution,
        weights=w.spec_weights,
        revision=w.revision,
        resize="bilinear",
        antialias=True,
        mean=HALF_MEAN,  # x -> 2x - 1
        std=HALF_STD,
        pooling=f"latent_mean_patch{config.patch}",
        dtype="bfloat16",
        channels_last=True,
        preset_version=PRESET_VERSION,
        seed=config.seed if w.mode == "random" else None,
        extra=(("tiny", True),) if config.tiny else (),
    )
    return FluxVAEEncoder(spec, net, arch["latent_channels"], config.patch)
