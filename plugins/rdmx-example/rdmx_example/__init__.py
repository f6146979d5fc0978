"""rdmx-example: the template for a third-party rdmx encoder plugin."""

__version__ = "0.1.0"
