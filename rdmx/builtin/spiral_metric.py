"""The spiral toy's metrics (paper Fig. 3): recall of the curve and median distance to it."""

from __future__ import annotations

import numpy as np

from rdmx.builtin.toydata import spiral_curve


def distance_to_curve(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Distance of each 2-D point to the nearest of a dense set of curve points (k-d tree)."""
    from scipy.spatial import cKDTree

    return cKDTree(curve).query(points, k=1)[0]


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


    def sweep_figure(self, cells, data_config, out):
        """The paper's Fig. 3 for a sweep of spiral runs: PNG grid + recall/medDist table."""
        from rdmx.builtin.spiral_figure import spiral_sweep_figure

        return spiral_sweep_figure(cells, data_config, out)


def build_spiral_metric(config) -> SpiralMetric:
    return SpiralMetric(config)
