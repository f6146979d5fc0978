"""Text-joint evaluation sets: each encoder's features with the text embedding of their condition.

For the text-to-image law the off-objective SW_r and MMDr are also computed on
``[φ(x) | β_e·τ(c)]`` — generated rows with the prompt they were made from, train and validation
bank rows with their own captions — so a generator that ignores its prompts scores worse than
the image marginal alone shows. One rule for every encoder, training or held out:
``β_e = sigma_scale · σ_e / s_txt`` with σ_e the median-heuristic bandwidth of the encoder's train
bank (the rule the training reference applies to its own subsample).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rdmx.errors import RdmxError
from rdmx.evaluate.rff import median_sigma


def text_joint(feats: Any, tau: Any, weight: float) -> torch.Tensor:
    """``[φ | weight · τ/|τ|]`` in float64."""
    feats = torch.as_tensor(feats).double()
    tau = F.normalize(torch.as_tensor(tau).double(), dim=1)
    if feats.shape[0] != tau.shape[0]:
        raise RdmxError(f"text-joint evaluation: {feats.shape[0]} feature rows but {tau.shape[0]} text embeddings")
    return torch.cat([feats, weight * tau.to(feats.device)], dim=1)


def text_joint_sets(gen: dict, train: dict, val: dict, gen_tau: Any, train_tau: dict, val_tau: dict, *,
                    sigma_scale: float, s_txt: float, seed: int = 0) -> tuple[dict, dict, dict, dict[str, float]]:
    """Per encoder: the three joint sets and the text weight β_e used."""
    out_g, out_t, out_v, weights = {}, {}, {}, {}
    for enc in gen:
        weights[enc] = sigma_scale * median_sigma(train[enc], seed=seed) / s_txt
        out_g[enc] = text_joint(gen[enc], gen_tau, weights[enc])
        out_t[enc] = text_joint(train[enc], train_tau[enc], weights[enc])
        out_v[enc] = text_joint(val[enc], val_tau[enc], weights[enc])
    return out_g, out_t, out_v, weights
