"""rdmx: Representation Distribution Matching for one-step image generators."""

__version__ = "0.1.0"
