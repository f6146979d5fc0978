"""Real floors: an estimator's loss on real validation draws against the train reference."""

from __future__ import annotations

import torch

from rdmx.compare.base import draw_rows


def estimate_floor(
    estimator, ref, val_feats: torch.Tensor, val_cond: torch.Tensor | None = None, *,
    draws: int = 8, n: int = 5120, seed: int = 0,
) -> float:
    """Mean raw loss of ``draws`` random draws of n validation rows (n clipped to the rows there)."""
    gen = torch.Generator().manual_seed(seed)
    n = min(n, val_feats.shape[0])
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            idx = draw_rows(val_feats.shape[0], n, gen).to(val_feats.device)
            cond = None if val_cond is None else val_cond[idx]
            total += float(estimator.loss(val_feats[idx], ref, cond, generator=gen))
    return total / draws
