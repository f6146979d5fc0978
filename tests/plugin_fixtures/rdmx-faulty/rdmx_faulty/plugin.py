"""Encoders that install and register fine, then misbehave when built or run."""

from pydantic import Field

from rdmx import ComponentConfig, hookimpl


class FaultyConfig(ComponentConfig):
    width: int = Field(8, ge=1, description="an integer option (strictness tests)")


@hookimpl
def rdmx_register_encoders(register):
    common = {"config": FaultyConfig, "resolution": 8, "weights": "none"}
    register("fault-raise", "rdmx_faulty.encoders:build_raise", dim=12, **common,
             description="build() raises a RuntimeError")
    register("fault-none", "rdmx_faulty.encoders:build_none", dim=12, **common,
             description="build() returns None")
    register("fault-dim", "rdmx_faulty.encoders:build_wrong_output", dim=128, **common,
             description="registered and spec dim 128, features of dim 96")
    register("fault-spec-dim", "rdmx_faulty.encoders:build_spec_96", dim=128, **common,
             description="registered dim 128, spec and features dim 96")
    register("fault-nan", "rdmx_faulty.encoders:build_nan", dim=12, **common,
             description="NaN features")
    register("fault-nan-grad", "rdmx_faulty.encoders:build_nan_grad", dim=12, **common,
             description="finite features, NaN gradient at the input")
