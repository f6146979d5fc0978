"""Registration of the builtin evaluation metrics (torch-free: config models and names only).

Factories are called as ``factory(config)`` and return a :class:`rdmx.evaluate.base.Metric`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rdmx.registry import ComponentConfig, Seed

# Seed of the evaluation RFF frequencies: a fixed constant no training component uses.
RFF_SEED = 7_000_003


class SwRatioConfig(ComponentConfig):
    n: int = Field(16384, ge=2, description="rows per set (generated, train subsample, val subsample)")
    directions: int = Field(1024, ge=1, description="number M of unit directions, from one shared seed")
    seed: Seed = Field(0, description="seed of the directions and of the row subsamples")
    chunk: int = Field(128, ge=1, description="directions projected at once (memory: rows x chunk)")
    precision: Literal["float64", "float32"] = Field(
        "float64", description="projection precision; squared differences always accumulate in float64"
    )


class MmdRatioConfig(ComponentConfig):
    n: int = Field(16384, ge=2, description="rows per set")
    features: int = Field(4096, ge=1, description="number D of random frequencies")
    seed: Seed = Field(0, description="seed of the row subsamples and of the median-heuristic subsample")
    rff_seed: Seed = Field(RFF_SEED, description="seed of the frequencies; disjoint from training seeds")


class FdConfig(ComponentConfig):
    n: int = Field(16384, ge=2, description="rows per set")
    seed: Seed = Field(0, description="seed of the row subsamples")


def register_metrics(register) -> None:
    """Register ``sw-r``, ``mmd-r`` and ``fd``."""
    register(
        "sw-r",
        "rdmx.evaluate.metrics:SwRatioMetric",
        config=SwRatioConfig,
        description="SW_rK: sliced W2 to train relative to real validation data, averaged over encoders.",
        requires=("features",),
    )
    register(
        "mmd-r",
        "rdmx.evaluate.metrics:MmdRatioMetric",
        config=MmdRatioConfig,
        description="MMDr: random-Fourier-feature MMD² to train relative to real validation data.",
        requires=("features",),
    )
    register(
        "fd",
        "rdmx.evaluate.metrics:FdMetric",
        config=FdConfig,
        description="Fréchet distance to train per encoder (and the real validation floor).",
        requires=("features",),
    )
