"""The drifting field of Deng et al. 2026 ("Generative Modeling via Drifting", arXiv 2602.04770).

Generated samples x are attracted by real positives and repelled by the other generated
samples (negatives) with doubly normalised affinities: logits -|x - y| / T over positives and
negatives together, A = sqrt(softmax over y * softmax over x); V(x) = sum_p A_p (sum_n A_n) y_p
- sum_n A_n (sum_p A_p) y_n. The loss is |x - stopgrad(x + V)|^2 (mean over entries), so its
gradient is -2 V / (N C): the field itself, not the gradient of the value. Features are scaled
so the mean distance is sqrt(C), temperatures by sqrt(C), and each temperature's field to
mean |V|^2 = C before the fields are summed. Not self-normalised.
"""

from __future__ import annotations

import math

import torch

from rdmx.compare.base import Estimator, ReferenceRequest
from rdmx.compare.configs import DriftingConfig


def drift_field(x: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """The field at x (N, C) from positives (P, C) and negatives = x itself (self pairs excluded)."""
    logits_pos = -torch.cdist(x, pos) / temperature
    logits_neg = -torch.cdist(x, neg) / temperature
    logits_neg = logits_neg.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), float("-inf"))
    logits = torch.cat([logits_pos, logits_neg], dim=1)
    affinity = torch.sqrt(torch.softmax(logits, dim=1) * torch.softmax(logits, dim=0))
    a_pos, a_neg = affinity[:, : pos.shape[0]], affinity[:, pos.shape[0] :]
    w_pos = a_pos * a_neg.sum(1, keepdim=True)
    w_neg = a_neg * a_pos.sum(1, keepdim=True)
    return w_pos @ pos - w_neg @ neg


class Drifting(Estimator):
    self_normalise = False

    def __init__(self, config: DriftingConfig | None = None):
        super().__init__(config or DriftingConfig())

    def request(self) -> ReferenceRequest:
        return ReferenceRequest(landmarks=0, bank=self.config.bank)

    def field(self, gen: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale S, summed field V in scaled coordinates), both constants."""
        c = self.config
        dim = gen.shape[1]
        with torch.no_grad():
            x = gen.detach()
            scale = torch.ones((), dtype=x.dtype, device=x.device)
            if c.normalise_features:
                n = x.shape[0]
                d_neg = torch.cdist(x, x)[~torch.eye(n, dtype=torch.bool, device=x.device)]
                scale = torch.cat([torch.cdist(x, pos).flatten(), d_neg]).mean() / math.sqrt(dim)
            xs, ps = x / scale, pos / scale
            total = torch.zeros_like(xs)
            for t in c.temperatures:
                v = drift_field(xs, ps, xs, t * math.sqrt(dim))
                if c.normalise_drift:
                    v = v / ((v * v).sum(1).mean() / dim).sqrt().clamp_min(1e-12)
                total += v
        return scale, total

    def _loss(self, gen, ref, generator):
        n_pos = self.config.positives or gen.shape[0]
        pos = ref.bank_batch(n_pos, generator, like=gen)
        scale, v = self.field(gen, pos)
        xs = gen / scale
        return ((xs - (xs.detach() + v)) ** 2).mean()
