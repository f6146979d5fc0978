"""rdmx text encoders backed by open_clip."""
