"""A weight-free encoder: differentiable histograms of oriented gradients, per image cell."""

import math

import torch
import torch.nn.functional as F

from rdmx.represent.encoder import Encoder, EncoderSpec


class GradientHistogramEncoder(Encoder):
    """Sobel gradients → soft orientation bins weighted by magnitude → mean per cell."""

    def __init__(self, config):
        super().__init__(
            EncoderSpec(
                name="example-hog", family="example", checkpoint="(none)",
                dim=config.cells * config.cells * config.bins, resolution=config.resolution,
                weights="none", resize="bilinear", mean=(0.0,), std=(1.0,), pooling="cell-mean",
                dtype="float32", preset_version="1",
            )
        )
        self.cells, self.bins = config.cells, config.bins
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        self.register_buffer("kernels", torch.stack([sobel, sobel.T]).unsqueeze(1))
        centres = torch.arange(config.bins) * (math.pi / config.bins)
        self.register_buffer("centres", centres)
        self.freeze()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=1, keepdim=True)  # grey: colour is not what this encoder looks at
        return F.interpolate(x, size=(self.spec.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.kernels)
        mag = torch.sqrt(g.pow(2).sum(1, keepdim=True) + 1e-8)
        angle = torch.atan2(g[:, 1:2], g[:, 0:1]) % math.pi  # unsigned orientation
        diff = torch.remainder(angle - self.centres.view(1, -1, 1, 1) + math.pi / 2, math.pi) - math.pi / 2
        weights = torch.exp(-0.5 * (diff * self.bins / math.pi) ** 2) * mag
        return F.adaptive_avg_pool2d(weights, self.cells).flatten(1)


def build(config) -> GradientHistogramEncoder:
    return GradientHistogramEncoder(config)
