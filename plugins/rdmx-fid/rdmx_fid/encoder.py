"""The FID Inception-v3, assembled from pytorch-fid's blocks without its download-on-build."""

from __future__ import annotations

import torch
import torchvision
from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

from rdmx.represent.encoder import HALF_MEAN, HALF_STD, Encoder, EncoderSpec
from rdmx.represent.presets import load_state_dict, resolve_weights, seeded
from rdmx_fid.plugin import CHECKPOINT, RESOLUTION, SOURCE, TINY_RESOLUTION

PRESET_VERSION = "2"  # 2: TF-1 bilinear resize to 299 (was torch bicubic with antialias)


def fid_inception() -> torch.nn.Module:
    """torchvision Inception-v3 (1008 classes, no aux head) with the FID graph's blocks swapped in."""
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class InceptionEncoder(Encoder):
    """pool3 features: the stem and Mixed blocks, then a global average (2048-d)."""

    STAGES = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
              "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
              "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self, spec: EncoderSpec, net: torch.nn.Module):
        super().__init__(spec)
        self.net = net
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.STAGES:
            x = getattr(self.net, name)(x)
        return x.mean(dim=(2, 3))


def build(config) -> InceptionEncoder:
    w = resolve_weights(config, "inception", CHECKPOINT, [SOURCE])
    if w.mode == "random":
        with seeded(config.seed):
            net = fid_inception()
    else:
        net = fid_inception()
        net.load_state_dict(load_state_dict(w.path))
    default = TINY_RESOLUTION if config.tiny else RESOLUTION
    spec = EncoderSpec(
        name="inception",
        family="pytorch-fid",
        checkpoint=CHECKPOINT,
        dim=2048,
        resolution=config.resolution or default,
        weights=w.spec_weights,
        revision=w.revision,
        resize="tf1-bilinear",  # the FID graph's own resize: TF-1 bilinear, asymmetric grid, no antialias
        antialias=False,
        mean=HALF_MEAN,  # x -> 2x - 1, the FID graph's input range (after the resize)
        std=HALF_STD,
        pooling="avg_pool3",
        dtype="float32",
        channels_last=True,
        preset_version=PRESET_VERSION,
        seed=config.seed if w.mode == "random" else None,
        extra=(("tiny", True),) if config.tiny else (),
    )
    return InceptionEncoder(spec, net)
