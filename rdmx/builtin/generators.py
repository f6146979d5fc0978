"""Builtin one-step generators: a small class-conditional conv net and the spiral MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

from rdmx.train import precision
from rdmx.train.generator import DataInfo, Generator


class ConvGenerator(Generator):
    """Noise (+ class embedding) → 4×4 map → upsampling conv blocks → sigmoid image.

    Each upsampling block (upsample, conv, group norm, SiLU) is a unit of ``shard_units()``: the
    engine may shard it with FSDP2 and/or recompute it in backward (activation checkpointing)."""

    def __init__(self, config, info: DataInfo):
        super().__init__(info)
        if not info.is_image:
            raise ValueError(f"generator 'conv' needs image data, got samples of shape {info.sample_shape}")
        c, h, w = info.sample_shape
        if h != w or h < 4 or h & (h - 1):
            raise ValueError(f"generator 'conv' needs a square power-of-two image size >= 4, got {h}×{w}")
        self.noise_shape = (config.noise_dim,)
        width = config.width
        self.embed = nn.Embedding(info.num_classes, config.class_dim) if info.num_classes else None
        in_dim = config.noise_dim + (config.class_dim if self.embed is not None else 0)
        self.stem = nn.Linear(in_dim, width * 16)
        self.width = width
        self.precision = config.precision
        self.blocks = nn.Sequential(*[
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, width, 3, padding=1),
                nn.GroupNorm(min(8, width), width),
                nn.SiLU(),
            )
            for _ in range(int(math.log2(h)) - 2)
        ])
        self.head = nn.Conv2d(width, c, 3, padding=1)

    def shard_units(self) -> list[nn.Module]:
        return list(self.blocks)

    def forward(self, noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        z = noise
        if self.embed is not None:
            if cond is None:
                raise ValueError("this generator is class-conditional: pass class ids")
            z = torch.cat([z, self.embed(cond)], dim=1)
        with precision.autocast(self.precision, z.device):
            x = self.stem(z).view(z.shape[0], self.width, 4, 4)
            x = torch.sigmoid(self.head(self.blocks(torch.nn.functional.silu(x))))
        return precision.output(x, self.precision)


class MLPGenerator(Generator):
    """Gaussian noise → ``depth`` ReLU layers of ``width`` → linear to the sample dimension."""

    def __init__(self, config, info: DataInfo):
        super().__init__(info)
        out = math.prod(info.sample_shape)
        self.noise_shape = (config.noise_dim,)
        layers: list[nn.Module] = []
        d = config.noise_dim
        for _ in range(config.depth):
            layers += [nn.Linear(d, config.width), nn.ReLU()]
            d = config.width
        layers.append(nn.Linear(d, out))
        self.net = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(noise).view(noise.shape[0], *self.info.sample_shape)


def build_conv(config, info: DataInfo) -> ConvGenerator:
    return ConvGenerator(config, info)


def build_mlp(config, info: DataInfo) -> MLPGenerator:
    return MLPGenerator(config, info)
