"""Builtin toy encoders with random frozen weights: a conv net, raw pixels, identity."""

from __future__ import annotations

import torch
from torch import nn

from rdmx.represent.encoder import HALF_MEAN, HALF_STD, Encoder, EncoderSpec


class ToyConvEncoder(Encoder):
    """A random-weight conv net (seeded): strided conv blocks, spatial mean or max pooling."""

    def __init__(self, config):
        spec = EncoderSpec(
            name="toy-conv", family="builtin", checkpoint=f"toy-conv-w{config.width}-d{config.depth}",
            dim=config.dim, resolution=config.resolution, weights="random", seed=config.seed,
            resize="bilinear", antialias=True, mean=HALF_MEAN[: config.channels] or HALF_MEAN,
            std=HALF_STD[: config.channels], pooling=config.pooling, dtype="float32",
            channels_last=True,
        )
        super().__init__(spec)
        g = torch.Generator().manual_seed(config.seed)
        layers: list[nn.Module] = []
        c = config.channels
        for i in range(config.depth):
            out = config.width * (2 ** min(i, 2))
            layers += [nn.Conv2d(c, out, 3, stride=2 if i < config.depth - 1 else 1, padding=1), nn.GELU()]
            c = out
        layers.append(nn.Conv2d(c, config.dim, 1))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for m in self.net.modules():
                if isinstance(m, nn.Conv2d):
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return h.amax(dim=(2, 3)) if self.spec.pooling == "max" else h.mean(dim=(2, 3))


class PixelEncoder(Encoder):
    """Pixels resized to ``resolution`` and flattened (the pixel-space member of a battery)."""

    def __init__(self, config):
        spec = EncoderSpec(
            name="pixels", family="builtin", checkpoint="pixels", dim=config.channels * config.resolution**2,
            resolution=config.resolution, weights="none", resize="bilinear", antialias=True,
            mean=(0.0,) * config.channels, std=(1.0,) * config.channels, pooling="flatten", dtype="float32",
        )
        super().__init__(spec)
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class IdentityEncoder(Encoder):
    """Samples that already are features (the spiral toy): flatten, nothing else."""

    def __init__(self, config):
        spec = EncoderSpec(
            name="identity", family="builtin", checkpoint="identity", dim=config.dim, resolution=0,
            weights="none", resize="none", mean=(), std=(), pooling="none", dtype="float32",
        )
        super().__init__(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.spec.dim:
            raise ValueError(f"encoder 'identity' expects samples of {self.spec.dim} values, got {tuple(x.shape[1:])}")
        return x.float().reshape(x.shape[0], -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def build_toy_conv(config) -> ToyConvEncoder:
    return ToyConvEncoder(config)


def build_pixels(config) -> PixelEncoder:
    return PixelEncoder(config)


def build_identity(config) -> IdentityEncoder:
    return IdentityEncoder(config)
