"""Entry point of the rdmx-pmf plugin: registers the pMF generators (torch-free)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, create_model, field_validator, model_validator

from rdmx.hookspecs import hookimpl
from rdmx.registry import ComponentConfig
from rdmx.represent.presets import pretrained_meta
from rdmx_pmf.presets import PRESETS, PMFPreset


class PMFConfig(ComponentConfig):
    """A pMF one-step generator (MiT backbone); the sampler's constants are the iRDM ImageNet run's."""

    preset: ClassVar[str] = "pmf-h"
    weights: str = Field("pretrained", description='"pretrained" (the released checkpoint, from the local '
                         'Hugging Face cache), "random", or a weights file (safetensors or torch)')
    allow_pickle: bool = Field(False, json_schema_extra={"runs_code": True},
                               description="read a trusted torch file with a full unpickle "
                               "(weights_only=False) when it holds non-tensor objects")
    seed: int = Field(0, description="initialisation seed when weights = 'random'")
    tiny: bool = Field(False, description="the same code at depth 2, width 64 (CPU tests); implies random weights")
    zero_init: bool = Field(True, description="random init keeps the residual gates and output layer at 0 (as "
                            "released: x̂ = 0); false draws them small so every weight matters (tests, benchmarks)")
    noise_scale: float = Field(1.0, gt=0, description="z = noise_scale · N(0, I): 1 as the iRDM release trains "
                               "and evaluates pMF-H; 2 is pMF's own sampler")
    guidance: float = Field(7.0, gt=0, description="CFG scale ω given to the network (it embeds 1 − 1/ω)")
    interval: tuple[float, float] = Field((0.2, 0.6), description="CFG interval [t_min, t_max] given to the network")
    steps: int = Field(1, ge=1, description="Euler steps of the average-velocity sampler (1 = one-step)")
    t_eps: float = Field(0.05, gt=0, le=1, description="x-prediction → velocity divides by clip(t, t_eps, 1)")
    autocast: Literal["bf16", "off"] = Field("bf16", description="the network's forward under bf16 autocast")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if not v:
            raise ValueError('weights must be "pretrained", "random" or a file path')
        return v

    @model_validator(mode="after")
    def _interval(self) -> PMFConfig:
        lo, hi = self.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"interval must satisfy 0 <= t_min <= t_max <= 1, got {list(self.interval)}")
        return self


def config_for(preset: PMFPreset) -> type[PMFConfig]:
    """PMFConfig bound to ``preset``; its default weights are the released ones where they exist."""
    default = "pretrained" if preset.source is not None else "random"
    model = create_model(
        f"PMFConfig_{preset.name.replace('-', '_')}",
        __base__=PMFConfig,
        __doc__=f"{PMFConfig.__doc__} (preset '{preset.name}')",
        weights=(str, Field(default, description=PMFConfig.model_fields["weights"].description)),
    )
    model.preset = preset.name
    return model


@hookimpl
def rdmx_register_generators(register):
    for p in PRESETS.values():
        weights = pretrained_meta([p.source]) if p.source is not None else {"weights": "random", "weights_available": True}
        register(
            p.name,
            "rdmx_pmf.generator:build",
            config=config_for(p),
            description=p.description,
            family="pmf",
            checkpoint=p.checkpoint,
            resolution=p.resolution,
            classes=p.classes,
            params=p.arch.parameter_count(p.resolution, p.classes),
            exports={"release": "rdmx_pmf.export:release_pth"},
            foreign_weights="rdmx_pmf.export:read_release",
            **weights,
        )
