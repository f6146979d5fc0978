"""Entry point of rdmx-fid: registers the ``inception`` encoder preset and the ``fid`` metric
(FID-50K as the literature computes it, with torch-fidelity's Inception). Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.registry import ComponentConfig
from rdmx.represent.presets import PresetConfig, URLSource, availability, pretrained_meta, preset_config, torch_hub_dir

CHECKPOINT = "pt_inception-2015-12-05-6726825d.pth"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + CHECKPOINT
SOURCE = URLSource(URL, lambda: torch_hub_dir() / "checkpoints", CHECKPOINT)
RESOLUTION = 299
TINY_RESOLUTION = 75  # the smallest input Inception-v3 accepts


class InceptionConfig(PresetConfig):
    """FID Inception-v3. ``tiny`` keeps the architecture (its widths are the FID graph) and runs at 75 px."""


@hookimpl
def rdmx_register_encoders(register):
    register(
        "inception",
        "rdmx_fid.encoder:build",
        config=preset_config(InceptionConfig, "inception"),
        description="FID Inception-v3 (TF-compatible weights), pool3 average, float32",
        family="pytorch-fid",
        checkpoint=CHECKPOINT,
        resolution=lambda c: c.resolution or (TINY_RESOLUTION if c.tiny else RESOLUTION),
        dim=2048,
        pooling="avg_pool3",
        role_hint="train",
        **pretrained_meta([SOURCE]),
    )


# torch-fidelity's Inception-v3 (the TF 2015-12-05 graph, as in the FID literature's evaluators)
FIDELITY_CHECKPOINT = "weights-inception-2015-12-05-6726825d.pth"
FIDELITY_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + FIDELITY_CHECKPOINT
FIDELITY_SOURCE = URLSource(FIDELITY_URL, lambda: torch_hub_dir() / "checkpoints", FIDELITY_CHECKPOINT)


class FidConfig(ComponentConfig):
    """FID of generated samples against the real set's Inception statistics (torch-fidelity's extractor)."""

    n: int = Field(50_000, ge=2, description="generated samples (the literature's FID-50K: 50,000)")
    real: Literal["train", "val"] = Field("train", description="the real split whose statistics are the reference")
    stats: str | None = Field(None, description="an .npz with 'mu' and 'sigma' (e.g. ADM's reference batch) "
                                                "instead of statistics computed from `real`")
    cache_dir: str = Field(".rdmx-cache", description="where computed real statistics are kept")
    batch_size: int = Field(100, ge=1, description="images per Inception forward")
    weights: str = Field("pretrained", description='"pretrained", "random" (tests) or a weights file path')
    seed: int = Field(0, description="init seed when weights = 'random'")


@hookimpl
def rdmx_register_metrics(register):
    register(
        "fid",
        "rdmx_fid.fid50k:FidMetric",
        config=FidConfig,
        description="FID-50K the way the literature computes it (torch-fidelity Inception, TF-1 resize, "
                    "uint8 samples) against the real set's statistics",
        requires=("samples",),
        checkpoint=FIDELITY_CHECKPOINT,
        weights="pretrained",
        weights_available=availability([FIDELITY_SOURCE]),
        weights_sources=(FIDELITY_SOURCE,),
    )
