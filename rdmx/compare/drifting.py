"""The drifting field of Deng et al. 2026 ("Generative Modeling via Drifting", arXiv 2602.04770),
by the rule of its reference implementation (as the iRDM release uses it, toy and ImageNet alike).

Generated samples x (N, C) are attracted by real positives p (P, C) and repelled by the generated
batch itself (the negatives). With d the distances from x to the targets [x | p] and
s = mean(d) over all N·(N + P) entries (self-distances included):

* coordinates are divided by s / √C (so the mean distance becomes √C), distances by s;
* self pairs get +100 added to their normalised distance (masked, not removed);
* per temperature T: logits −d/(s T), A = sqrt(max(softmax_rows · softmax_cols, floor)), with
  A_n its negative and A_p its positive columns; the field
  V_i = (Σ_k A_n,ik) Σ_j A_p,ij (p_j − x_i) − (Σ_j A_p,ij) Σ_k A_n,ik (x_k − x_i),
  scaled to a mean squared entry of 1; the fields of all temperatures are summed.

The loss is |x̃ − stopgrad(x̃ + V)|² (mean over entries) in the scaled coordinates x̃, so its
gradient is −2 V / (s/√C · N · C): the field itself, not the gradient of the value. The affinity
floor (1e-6 under the square root) gives every pair a small weight, self pairs included; it is
part of the reference rule. Not self-normalised by default.
"""

from __future__ import annotations

import math

import torch

from rdmx.compare.base import Estimator, ReferenceRequest
from rdmx.compare.configs import DriftingConfig

SELF_DISTANCE = 100.0  # added to the normalised self-distance of each generated sample (the mask)
MIN_SCALE = 1e-3  # floor of the mean distance and of the coordinate scale


def drift_field(x: torch.Tensor, pos: torch.Tensor, dist: torch.Tensor, temperature: float,
                floor: float) -> torch.Tensor:
    """The field at x (N, C) for one temperature; ``dist`` (N, N + P) is the normalised, masked
    distance to the targets [x | pos] (all in the same, scaled coordinates)."""
    n = x.shape[0]
    logits = -dist / temperature
    affinity = (torch.softmax(logits, dim=1) * torch.softmax(logits, dim=0)).clamp_min(floor).sqrt()
    a_neg, a_pos = affinity[:, :n], affinity[:, n:]
    w_pos = a_pos * a_neg.sum(1, keepdim=True)
    w_neg = a_neg * a_pos.sum(1, keepdim=True)
    # Σ_j w_pos,ij (p_j − x_i) − Σ_k w_neg,ik (x_k − x_i); the x_i terms cancel up to round-off
    return w_pos @ pos - w_neg @ x - (w_pos.sum(1, keepdim=True) - w_neg.sum(1, keepdim=True)) * x


class Drifting(Estimator):
    self_normalise = False

    def __init__(self, config: DriftingConfig | None = None):
        super().__init__(config or DriftingConfig())

    def request(self) -> ReferenceRequest:
        return ReferenceRequest(landmarks=0, bank=self.config.bank)

    def field(self, gen: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(coordinate scale, summed field V in scaled coordinates), both constants."""
        c = self.config
        dim = gen.shape[1]
        n = gen.shape[0]
        with torch.no_grad():
            x = gen.detach()
            dist = torch.cdist(x, torch.cat([x, pos]))
            if c.normalise_features:
                mean = dist.mean()
                scale = (mean / math.sqrt(dim)).clamp_min(MIN_SCALE)
                dist = dist / mean.clamp_min(MIN_SCALE)
            else:
                scale = torch.ones((), dtype=x.dtype, device=x.device)
            dist = dist + SELF_DISTANCE * torch.eye(n, dist.shape[1], dtype=dist.dtype, device=dist.device)
            xs, ps = x / scale, pos / scale
            total = torch.zeros_like(xs)
            for t in c.temperatures:
                v = drift_field(xs, ps, dist, t, c.affinity_floor)
                if c.normalise_drift:
                    v = v / (v * v).mean().clamp_min(1e-8).sqrt()
                total += v
        return scale, total

    def _loss(self, gen, ref, generator):
        n_pos = self.config.positives or gen.shape[0]
        pos = ref.bank_batch(n_pos, generator, like=gen)
        scale, v = self.field(gen, pos)
        xs = gen / scale
        return ((xs - (xs.detach() + v)) ** 2).mean()
