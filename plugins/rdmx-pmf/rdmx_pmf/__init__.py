"""rdmx generators of the pMF family (pixel MeanFlow, MiT backbone)."""
