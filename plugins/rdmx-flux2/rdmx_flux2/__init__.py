"""rdmx-flux2: the FLUX.2 [klein] one-step text-to-image generator for rdmx (diffusers)."""

__version__ = "0.1.0"
