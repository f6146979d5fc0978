"""rdmx encoder preset: the FID Inception-v3."""
