"""rdmx encoder presets backed by Hugging Face transformers."""
