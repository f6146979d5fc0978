"""Entry point of rdmx-pickscore: registers the ``pickscore`` metric (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.registry import ComponentConfig
from rdmx.represent.presets import HFSource, availability

MODEL_REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MODEL_FILES = (("config.json",), ("model.safetensors", "pytorch_model.bin"))
PROCESSOR_FILES = (("preprocessor_config.json",), ("tokenizer.json", "vocab.json"))


class PickScoreConfig(ComponentConfig):
    model: str = Field(MODEL_REPO, description="hub repo id (local cache only) or a local model directory")
    processor: str = Field(PROCESSOR_REPO, description="hub repo id (local cache only) or a local directory")
    batch_size: int = Field(16, ge=1, description="images scored at once")
    device: str = Field("auto", description='"auto" (cuda when available), "cpu", "cuda", "cuda:1", ...')
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="model weights dtype")
    max_length: int = Field(77, ge=2, description="prompt token limit (truncation)")


@hookimpl
def rdmx_register_metrics(register):
    register(
        "pickscore",
        "rdmx_pickscore.metric:PickScoreMetric",
        config=PickScoreConfig,
        description="PickScore (logit_scale · cos(image, prompt)): mean, and win rate over matched-noise "
        "reference samples when given.",
        requires=("samples", "labels"),
        weights_available=availability([HFSource(MODEL_REPO, MODEL_FILES), HFSource(PROCESSOR_REPO, PROCESSOR_FILES)]),
        weights_sources=(HFSource(MODEL_REPO, MODEL_FILES), HFSource(PROCESSOR_REPO, PROCESSOR_FILES)),
    )
