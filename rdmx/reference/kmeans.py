"""Lloyd's k-means for Nystrom landmarks: random-row init, empty clusters reseeded from random rows."""

from __future__ import annotations

import torch

from rdmx.compare.kernels import sq_dists


def assign(x: torch.Tensor, centers: torch.Tensor, block_elems: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-center labels and squared distances, computed in row blocks."""
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    c_sq = (centers * centers).sum(1)
    step = max(1, block_elems // max(centers.shape[0], 1))
    for start in range(0, x.shape[0], step):
        d2 = sq_dists(x[start : start + step], centers, c_sq)
        dist[start : start + step], labels[start : start + step] = d2.min(1)
    return labels, dist


def kmeans_objective(x: torch.Tensor, centers: torch.Tensor) -> float:
    """Mean squared distance of each row to its nearest center (float64)."""
    return float(assign(x.double(), centers.double())[1].mean())


def kmeans(
    x: torch.Tensor, m: int, *, iters: int = 20, seed: int = 0, history: list[float] | None = None
) -> torch.Tensor:
    """m centers of x (n, d). iters=0 returns m random rows. m >= n returns the rows themselves.

    Cluster sums accumulate in float64; assignments use x's dtype. ``history`` (optional)
    receives the objective before every update and after the last."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    if m >= n:
        return x.clone()
    centers = x[torch.randperm(n, generator=gen)[:m].to(x.device)].clone()
    for _ in range(iters):
        labels, dist = assign(x, centers)
        if history is not None:
            history.append(float(dist.double().mean()))
        sums = torch.zeros(m, x.shape[1], dtype=torch.float64, device=x.device)
        sums.index_add_(0, labels, x.double())
        counts = torch.bincount(labels, minlength=m)
        filled = counts > 0
        new = centers.double().clone()
        new[filled] = sums[filled] / counts[filled, None].double()
        empty = (~filled).nonzero().flatten()
        if empty.numel():
            picks = torch.randint(n, (empty.numel(),), generator=gen).to(x.device)
            new[empty] = x[picks].double()
        centers = new.to(x.dtype)
    if history is not None:
        history.append(kmeans_objective(x, centers))
    return centers
