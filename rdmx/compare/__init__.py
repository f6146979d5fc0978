"""The comparison axis: estimators of the distance between generated and real feature laws.

Kept import-light: ``rdmx.compare.plugin`` and ``rdmx.compare.configs`` must not import torch.
"""
