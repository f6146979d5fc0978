"""The encoder interface: a fully specified, frozen feature extractor.

An encoder receives images in [0, 1] of any size, resizes and normalises them differentiably
to its spec, and returns ``(B, dim)`` float32 features. Its parameters are frozen; gradients
reach the input only. Everything that changes its features is in ``spec`` and so in its
fingerprint.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from rdmx.fingerprint import fingerprint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that determines an encoder's features; its fingerprint keys every cache.

    The defaults assume nothing: float32 compute, no pretrained weights, no pooling. A preset
    states its own precision, pooling and weights. Fields:

    * ``name``, ``family``, ``checkpoint``: what it is (checkpoint: hub id, file, or a label).
    * ``dim``: the feature dimension ``forward`` returns; ``resolution``: the side images are
      resized to (``resize``: bicubic | bilinear | nearest | none; ``antialias``).
    * ``mean`` / ``std``: per-channel normalisation after resizing.
    * ``weights``: "pretrained" | "random" | "none" (no parameters) | a local path;
      ``revision``: the checkpoint revision or file hash when known; ``seed``: the init seed of
      random weights.
    * ``pooling``: a label of how tokens become one vector (``features()`` implements it).
    * ``dtype``: compute dtype — "float32" (no autocast), "bfloat16" or "float16" (autocast).
    * ``channels_last``: memory format of the input and weights.
    * ``preset_version``: the version of the code behind the features. **Bump it whenever a
      code change alters the features while every other field stays the same** (a fixed
      preprocessing bug, a different layer): cached reference features are keyed by the
      fingerprint, so an unchanged version silently reuses features of the old code.
    * ``extra``: any other (key, value) pairs that change features (tuples, hashable).
    """

    name: str
    family: str  # e.g. "timm", "open_clip", "transformers", "diffusers", "builtin"
    checkpoint: str  # e.g. "convnextv2_base.fcmae_ft_in22k_in1k", or a path
    dim: int
    resolution: int
    weights: str = "none"  # "pretrained" | "random" | "none" | a local path
    revision: str = ""  # checkpoint revision or file hash where known
    resize: str = "bicubic"  # bicubic | bilinear | nearest | tf1-bilinear (rdmx.represent.resize) | none
    antialias: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pooling: str = "none"
    dtype: str = "float32"  # compute dtype under autocast; "float32" disables autocast
    weights_dtype: str = "float32"  # dtype the frozen weights are held in ("bfloat16" halves their memory)
    channels_last: bool = False
    preset_version: str = "1"
    seed: int | None = None  # random-weight init seed (weights="random")
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def fingerprint(self) -> str:
        fields = asdict(self)
        if fields["weights_dtype"] == "float32":  # the default leaves the fingerprints of float32 weights as they were
            del fields["weights_dtype"]
        return fingerprint({"kind": "encoder", **fields})

    def with_(self, **changes: Any) -> EncoderSpec:
        return replace(self, **changes)


def resize_and_normalise(x: torch.Tensor, spec: EncoderSpec) -> torch.Tensor:
    """Differentiable resize to ``spec.resolution`` and (x - mean) / std; x in [0, 1]."""
    if x.shape[1] == 1 and len(spec.mean) == 3:
        x = x.expand(-1, 3, -1, -1)
    if spec.resize != "none" and tuple(x.shape[-2:]) != (spec.resolution, spec.resolution):
        if spec.resize == "tf1-bilinear":
            from rdmx.represent.resize import resize_bilinear_tf1

            return _normalise(resize_bilinear_tf1(x, (spec.resolution, spec.resolution)), spec)
        kw: dict[str, Any] = {}
        if spec.resize in ("bicubic", "bilinear"):
            kw = {"align_corners": False, "antialias": spec.antialias}
        x = F.interpolate(x, size=(spec.resolution, spec.resolution), mode=spec.resize, **kw)
    return _normalise(x, spec)


def _normalise(x: torch.Tensor, spec: EncoderSpec) -> torch.Tensor:
    mean = torch.as_tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


class Encoder(torch.nn.Module, abc.ABC):
    """Base class. Subclasses implement ``features(x_normalised) -> (B, dim)``."""

    spec: EncoderSpec

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    @property
    def dim(self) -> int:
        return self.spec.dim

    def freeze(self) -> Encoder:
        """Eval mode, no parameter gradients, channels-last where the spec says."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        if self.spec.channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    def train(self, mode: bool = True) -> Encoder:  # encoders stay in eval mode
        return super().train(False)

    def hold_weights_in(self, dtype: str) -> Encoder:
        """Hold the frozen weights (and floating buffers) in ``dtype``: "float32" or "bfloat16".

        Only for encoders that compute under bf16 autocast (``spec.dtype``): their matmuls and
        convolutions already run in bf16, so bf16 weights halve the weights' memory and skip the
        per-call cast; the remaining float32 ops (norms, softmax) see weights rounded to bf16, so
        the features change and so does the fingerprint. An encoder that computes in float32
        (FID Inception) keeps float32 weights."""
        if dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights dtype must be one of {sorted(WEIGHT_DTYPES)}, got {dtype!r}")
        if dtype == self.spec.weights_dtype:
            return self
        if dtype != "float32" and self.spec.dtype == "float32":
            raise ValueError(f"encoder '{self.spec.name}' computes in float32 (its spec's dtype), "
                             f"so its weights stay float32; {dtype} weights need a bf16-autocast encoder")
        self.to(WEIGHT_DTYPES[dtype])
        self.spec = self.spec.with_(weights_dtype=dtype)
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return resize_and_normalise(x, self.spec)

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a resized, normalised batch: ``(B, dim)`` (or anything reshaped to it)."""

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.spec.dtype == "float32":
            return torch.autocast(device.type, enabled=False)
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[self.spec.dtype]
        return torch.autocast(device.type, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of images in [0, 1]: float32 (float64 stays float64, for exactness tests)."""
        out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = self.preprocess(x.to(out_dtype))
        if self.spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast(x.device):
            f = self.features(x)
        return f.to(out_dtype).reshape(f.shape[0], -1)
