"""One evaluation of a generator, shared by training (step 0 and every K steps) and `rdmx eval`:
fixed-noise samples → every battery encoder → SW_rK / MMDr / FD against the real banks, plus the
recipe's ``[eval] metrics``. The metrics themselves live in :mod:`rdmx.evaluate`, which never
sees the training objective."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rdmx.train.sampling import generate_features

EVAL_NOISE_SALT = 12345  # eval noise = eval.seed + this: the same samples for every checkpoint


@dataclass
class Evaluation:
    result: Any  # rdmx.evaluate.suite.EvalResult (extra metrics merged into its summary)
    samples: torch.Tensor | None  # kept (CPU) only when asked for or when a metric reads them
    cond: torch.Tensor | None

    def scalars(self) -> dict[str, float]:
        """Flat metrics for trackers (per-encoder SW numerators/denominators left out)."""
        return {k: float(v) for k, v in self.result.flat().items() if not k.startswith(("sw_gen", "sw_val"))}


@torch.no_grad()
def evaluate_generator(
    generator, encoders: Mapping[str, torch.nn.Module], roles: Mapping[str, str], refs: Mapping[str, Any],
    eval_config, *, chunk: int, device: torch.device, metrics=(), data=None, step: int | None = None,
    keep_samples: bool = False, dist=None,
) -> Evaluation | None:
    """``eval_config`` is the recipe's ``[eval]`` block; ``refs`` hold each encoder's banks; samples
    are generated and encoded ``chunk`` at a time, without gradients.

    Under torchrun every rank must call this (the ranks share the generation, see
    :func:`rdmx.train.sampling.generate_features`); rank 0 computes the metrics and returns them,
    the other ranks return None."""
    from rdmx.evaluate.base import EncoderFeatures, EvalContext
    from rdmx.evaluate.suite import evaluate_features

    e = eval_config
    feats, samples, cond = generate_features(generator, encoders, e.n, e.seed + EVAL_NOISE_SALT, chunk, device,
                                             keep_samples=keep_samples or bool(metrics), dist=dist)
    if dist is not None and not dist.main:
        return None
    train = {k: refs[k].train_bank for k in encoders}
    val = {k: refs[k].val_bank for k in encoders}
    # each encoder's three sets are cut to min(n, bank rows) by seeded subsamples
    result = evaluate_features(feats, train, val, dict(roles), n=e.n, directions=e.directions, seed=e.seed,
                               metrics=tuple(e.suite), device=device)
    if metrics:
        ctx = EvalContext(
            features={k: EncoderFeatures(feats[k], train[k], val[k], roles[k]) for k in encoders},
            samples=samples.cpu(), labels=None if cond is None else cond.cpu(), step=step,
        )
        ctx.data = data  # sample metrics on toy data (spiral) read the data's geometry
        for metric in metrics:
            result.summary.update({k: float(v) for k, v in metric(ctx).items()})
    return Evaluation(result, samples, cond)
