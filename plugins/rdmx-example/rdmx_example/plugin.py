"""Hook implementations. Keep this module light: no torch import here, so `rdmx list` stays fast.

The factory is given as "module:attr" and imported only when a recipe builds the encoder.
"""

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.registry import ComponentConfig


class GradientHistogramConfig(ComponentConfig):
    """Options a recipe may set in its battery entry (unknown keys are rejected)."""

    resolution: int = Field(32, ge=8, description="images are resized to this side first")
    cells: int = Field(4, ge=1, description="the image is split into cells × cells regions")
    bins: int = Field(8, ge=2, description="orientation bins per cell")


@hookimpl
def rdmx_register_encoders(register):
    register(
        "example-hog",
        "rdmx_example.encoder:build",
        config=GradientHistogramConfig,
        description="example plugin: soft histograms of oriented gradients per cell (no weights)",
        resolution=32,
        dim=4 * 4 * 8,
        weights="none",
        checkpoint="(none)",
        family="example",
        weights_available=True,
    )
