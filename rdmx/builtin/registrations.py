"""Registration of the builtin toy components (torch-free: config models and factory paths)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rdmx.registry import ComponentConfig, Seed


class DigitsConfig(ComponentConfig):
    image_size: int = Field(32, ge=8, le=1024, description="upscaled side length")
    resize: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: Seed = 0


class SpiralConfig(ComponentConfig):
    n_train: int = Field(2000, ge=2)
    n_val: int = Field(2000, ge=2)
    turns: float = 2.0
    r0: float = 0.5
    r1: float = 2.0
    noise: float = Field(0.05, ge=0)
    dim: int = Field(64, ge=2)
    seed: Seed = 0
    embed_seed: Seed = 0


class ConvGeneratorConfig(ComponentConfig):
    noise_dim: int = Field(64, ge=1)
    class_dim: int = Field(16, ge=1)
    width: int = Field(64, ge=4)
    precision: Literal["float32", "bfloat16"] = Field(
        "float32", description="'bfloat16': the forward runs under bf16 autocast (parameters stay float32)")


class MLPGeneratorConfig(ComponentConfig):
    noise_dim: int = Field(2, ge=1)
    width: int = Field(256, ge=1)
    depth: int = Field(4, ge=1)


class ToyConvConfig(ComponentConfig):
    seed: Seed = 0
    width: int = Field(32, ge=1)
    depth: int = Field(3, ge=1)
    dim: int = Field(128, ge=1)
    resolution: int = Field(32, ge=4)
    channels: Literal[1, 3] = 1
    pooling: Literal["mean", "max"] = "mean"


class PixelsConfig(ComponentConfig):
    resolution: int = Field(16, ge=1)
    channels: Literal[1, 3] = 1


class IdentityConfig(ComponentConfig):
    dim: int = Field(64, ge=1)


class SpiralMetricConfig(ComponentConfig):
    anchors: int = Field(60, ge=1)
    radius: float = Field(0.15, gt=0)


def register_datasets(register) -> None:
    register("digits", "rdmx.builtin.toydata:build_digits", config=DigitsConfig,
             description="scikit-learn's 1797 real 8×8 handwritten digits, upscaled; 10 classes",
             kind="images", classes=10, sample_shape=lambda c: (c.channels, c.image_size, c.image_size))
    register("spiral", "rdmx.builtin.toydata:build_spiral", config=SpiralConfig,
             description="the paper's 2-turn 2-D spiral embedded in 64-D by a random orthonormal map",
             kind="vectors", classes=0, sample_shape=lambda c: (c.dim,))


def register_generators(register) -> None:
    register("conv", "rdmx.builtin.generators:build_conv", config=ConvGeneratorConfig,
             description="small class-conditional conv generator: noise → 4×4 → upsampling blocks → sigmoid",
             family="builtin", weights="random")
    register("mlp", "rdmx.builtin.generators:build_mlp", config=MLPGeneratorConfig,
             description="MLP from Gaussian noise (the spiral toy's generator: 4×256 ReLU)",
             family="builtin", weights="random")


def register_encoders(register) -> None:
    register("toy-conv", "rdmx.builtin.encoders:build_toy_conv", config=ToyConvConfig,
             description="random-weight frozen conv net (seeded); a cheap stand-in encoder",
             resolution=lambda c: c.resolution, dim=lambda c: c.dim, checkpoint="(random init)", weights="random",
             family="builtin", pooling="mean", weights_available=True)
    register("pixels", "rdmx.builtin.encoders:build_pixels", config=PixelsConfig,
             description="pixel space: images resized and flattened", resolution=lambda c: c.resolution,
             dim=lambda c: c.channels * c.resolution**2, checkpoint="(none)", weights="none", family="builtin",
             pooling="flatten", weights_available=True)
    register("identity", "rdmx.builtin.encoders:build_identity", config=IdentityConfig,
             description="samples are already features (spiral toy)", resolution=None, dim=lambda c: c.dim,
             checkpoint="(none)", weights="none", family="builtin", modality="vector", weights_available=True)


def register_metrics(register) -> None:
    register("spiral", "rdmx.builtin.spiral_metric:build_spiral_metric", config=SpiralMetricConfig,
             description="spiral toy: recall of the curve and median distance to it (in 2-D)",
             requires=("samples",))
