"""Bilinear resizing with TensorFlow 1.x's rule (``tf.image.resize_bilinear``, no corner alignment,
no half-pixel centres), the resize of the FID Inception graph.

Output pixel i reads the input at ``s = i · in / out`` (an asymmetric grid: pixel 0 maps to
input 0, no ½-pixel offset), interpolating linearly between ``⌊s⌋`` and ``min(⌊s⌋ + 1, in − 1)``;
no antialiasing, whatever the scale. Differentiable in the input (a fixed linear map).
"""

from __future__ import annotations

import torch


def _axis(n_in: int, n_out: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower index, upper index, weight of the upper one) of every output position on one axis."""
    pos = torch.arange(n_out, device=device, dtype=torch.float64) * (n_in / n_out)
    lo = pos.floor().long().clamp_max(n_in - 1)
    hi = (lo + 1).clamp_max(n_in - 1)
    return lo, hi, (pos - lo.double()).to(dtype)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``size = (h, w)`` by TF-1's bilinear rule (see module docstring)."""
    h_out, w_out = size
    ylo, yhi, dy = _axis(x.shape[-2], h_out, x.device, x.dtype)
    xlo, xhi, dx = _axis(x.shape[-1], w_out, x.device, x.dtype)
    top, bottom = x[..., ylo, :], x[..., yhi, :]
    rows = top + (bottom - top) * dy[:, None]
    left, right = rows[..., xlo], rows[..., xhi]
    return left + (right - left) * dx
