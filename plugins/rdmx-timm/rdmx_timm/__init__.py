"""rdmx encoder presets backed by timm."""
