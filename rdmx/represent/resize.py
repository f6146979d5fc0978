"""Bilinear resizing with TensorFlow 1.x's rule (``tf.image.resize_bilinear``, no corner alignment,
no half-pixel centres), the resize of the FID Inception graph.

Output pixel i reads the input at ``s = i · in / out`` (an asymmetric grid: pixel 0 maps to
input 0, no ½-pixel offset), interpolating linearly between ``⌊s⌋`` and ``min(⌊s⌋ + 1, in − 1)``;
no antialiasing, whatever the scale. Differentiable in the input (a fixed linear map).
"""

from __future__ import annotations

import torch


def interpolation_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) matrix of TF-1's rule on one axis: row i holds 1 − f at ⌊s⌋ and f at
    min(⌊s⌋ + 1, n_in − 1), with s = i · n_in / n_out and f = s − ⌊s⌋ (positions in float64)."""
    pos = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = pos.floor().long().clamp_max(n_in - 1)
    hi = (lo + 1).clamp_max(n_in - 1)
    frac = pos - lo.double()
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w.to(device=device, dtype=dtype)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``size = (h, w)`` by TF-1's bilinear rule (see module docstring),
    as two small matrix products (rows, then columns): fast forward and backward on any device."""
    h_out, w_out = size
    wy = interpolation_matrix(x.shape[-2], h_out, x.device, x.dtype)
    wx = interpolation_matrix(x.shape[-1], w_out, x.device, x.dtype)
    return torch.matmul(torch.matmul(wy, x), wx.T)
