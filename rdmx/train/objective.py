"""The training objective: per-encoder raw distances, self-normalised and weighted."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

SELF_NORM_EPS = 1e-7


def self_normalise(raw: torch.Tensor) -> torch.Tensor:
    """``raw / (|raw|.detach() + 1e-7)``: value ≈ ±1, gradient = ∇raw / |raw|."""
    return raw / (raw.detach().abs() + SELF_NORM_EPS)


def make_loss_fn(estimator, references: Mapping, weights_ref: Mapping[str, float], generator_fn=None,
                 condition: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """A ``loss_fn(features, cond)`` for gradient caching.

    ``weights_ref`` is read at call time (the balancer's current λ); encoders with weight 0 still
    report their raw distance but contribute no gradient. ``condition`` maps the generator's
    conditions to the joint law's (prompt ids -> their text embeddings τ for the text-joint law;
    identity when None), so the generator and the loss see the same prompt for every row.
    """

    def loss_fn(features: dict[str, torch.Tensor], cond: torch.Tensor | None):
        if condition is not None and cond is not None:
            cond = condition(cond)
        raws: dict[str, torch.Tensor] = {}
        total = None
        for name, feats in features.items():
            raw = estimator.loss(feats, references[name], cond, generator=generator_fn() if generator_fn else None)
            raws[name] = raw
            term = self_normalise(raw) if estimator.self_normalise else raw
            term = float(weights_ref.get(name, 0.0)) * term
            total = term if total is None else total + term
        if total is None:
            raise ValueError("no training encoder produced a loss")
        return total, raws

    return loss_fn
