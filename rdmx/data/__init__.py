"""Real data: the dataset interface the engine uses and the image-folder dataset."""

from rdmx.data.base import RealData

__all__ = ["RealData"]
