"""Hook implementations. Keep this module light: no torch import here, so `rdmx list` stays fast.

The factory is given as "module:attr" and imported only when a recipe builds the encoder. The
metadata is typed (rdmx.meta.EncoderMeta): `dim` and `resolution` depend on the options, so
they are declared as functions of the validated config; rdmx checks them against every built
encoder.
"""

from pydantic import Field

from rdmx import ComponentConfig, hookimpl


class GradientHistogramConfig(ComponentConfig):
    """Options a recipe may set in its battery entry (unknown keys and mistyped values are rejected)."""

    resolution: int = Field(32, ge=8, le=1024, description="images are resized to this side first")
    cells: int = Field(4, ge=1, description="the image is split into cells × cells regions")
    bins: int = Field(8, ge=2, description="orientation bins per cell")


@hookimpl
def rdmx_register_encoders(register):
    register(
        "example-hog",
        "rdmx_example.encoder:build",
        config=GradientHistogramConfig,
        description="example plugin: soft histograms of oriented gradients per cell (no weights)",
        resolution=lambda c: c.resolution,
        dim=lambda c: c.cells * c.cells * c.bins,
        weights="none",
        checkpoint="(none)",
        family="example",
        pooling="cell-mean",
        weights_available=True,
    )
