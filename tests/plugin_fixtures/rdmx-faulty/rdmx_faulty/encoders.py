"""The faulty encoders (torch imported only when one is built)."""

import torch

from rdmx.represent.encoder import Encoder, EncoderSpec


class Pooled(Encoder):
    """Mean of 8x8 pixels per channel block: features of ``out`` values from a fixed linear map."""

    def __init__(self, spec_dim: int, out: int, mode: str = "plain"):
        super().__init__(EncoderSpec(name="faulty", family="test", checkpoint="(none)", dim=spec_dim, resolution=8,
                                     resize="bilinear", mean=(0.0,), std=(1.0,), preset_version=mode))
        self.mode = mode
        self.register_buffer("proj", torch.randn(64, out, generator=torch.Generator().manual_seed(0)))
        self.freeze()

    def preprocess(self, x):
        x = x.mean(dim=1, keepdim=True)
        return torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)

    def features(self, x):
        f = x.flatten(1) @ self.proj
        if self.mode == "nan":
            return f * float("nan")
        if self.mode == "nan-grad":  # forward finite: 0 * sqrt(0) = 0; backward 0 * inf = NaN
            return f + 0.0 * torch.sqrt(x.flatten(1)[:, :1] * 0.0)
        return f


def build_raise(config):
    raise RuntimeError("the backbone exploded on purpose")


def build_none(config):
    return None


def build_wrong_output(config):
    return Pooled(128, 96)


def build_spec_96(config):
    return Pooled(96, 96)


def build_nan(config):
    return Pooled(12, 12, "nan")


def build_nan_grad(config):
    return Pooled(12, 12, "nan-grad")
