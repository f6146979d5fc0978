"""rdmx presets backed by diffusers."""
