"""The spiral toy's metrics (paper Fig. 3): recall of the curve and median distance to it."""

from __future__ import annotations

import numpy as np

from rdmx.builtin.toydata import spiral_curve


def distance_to_curve(points: np.ndarray, curve: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Distance of each 2-D point to a densely sampled curve (polyline vertices)."""
    out = np.empty(len(points))
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk]
        d2 = ((p[:, None, :] - curve[None, :, :]) ** 2).sum(-1)
        out[s : s + chunk] = np.sqrt(d2.min(1))
    return out


def spiral_scores(
    samples2d: np.ndarray, *, turns: float, r0: float, r1: float, anchors: int = 60,
    radius: float = 0.15, curve_points: int = 20000,
) -> dict[str, float]:
    """recall = share of ``anchors`` points on the noiseless curve with a sample within ``radius``;
    medDist = median distance of samples to the curve."""
    anchor_pts = spiral_curve(np.linspace(0, 1, anchors), turns, r0, r1)
    d_anchor = distance_to_curve(anchor_pts, samples2d)
    dense = spiral_curve(np.linspace(0, 1, curve_points), turns, r0, r1)
    return {
        "recall": float((d_anchor <= radius).mean()),
        "med_dist": float(np.median(distance_to_curve(samples2d, dense))),
    }


class SpiralMetric:
    """Projects generated 64-D samples back to 2-D with the data's embedding and scores them."""

    per_encoder = False

    def __init__(self, config):
        self.config = config

    def __call__(self, ctx) -> dict[str, float]:
        data = ctx.data
        emb = data.extras.get("embedding")
        if emb is None:
            raise ValueError("metric 'spiral' needs the 'spiral' dataset (no embedding found)")
        samples = ctx.samples.detach().double().cpu().numpy().reshape(len(ctx.samples), -1)
        dc = data.config
        return {
            f"spiral/{k}": v
            for k, v in spiral_scores(
                samples @ emb, turns=dc["turns"], r0=dc["r0"], r1=dc["r1"], anchors=self.config.anchors,
                radius=self.config.radius,
            ).items()
        }


def build_spiral_metric(config) -> SpiralMetric:
    return SpiralMetric(config)
