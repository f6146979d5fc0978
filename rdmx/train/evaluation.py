"""One evaluation of a generator, shared by training (step 0 and every K steps) and `rdmx eval`:
fixed-noise samples → every battery encoder → SW_rK / MMDr / FD against the real banks, plus the
recipe's ``[eval] metrics``. The metrics themselves live in :mod:`rdmx.evaluate`, which never
sees the training objective."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rdmx.train.sampling import encode_all, generate

EVAL_NOISE_SALT = 12345  # eval noise = eval.seed + this: the same samples for every checkpoint


@dataclass
class Evaluation:
    result: Any  # rdmx.evaluate.suite.EvalResult (extra metrics merged into its summary)
    samples: torch.Tensor
    cond: torch.Tensor | None

    def scalars(self) -> dict[str, float]:
        """Flat metrics for trackers (per-encoder SW numerators/denominators left out)."""
        return {k: float(v) for k, v in self.result.flat().items() if not k.startswith(("sw_gen", "sw_val"))}


def check_finite(samples: torch.Tensor, feats: Mapping[str, torch.Tensor], encoders: Mapping[str, Any],
                 step: int | None) -> None:
    """Evaluation needs finite samples and features: a NaN here names its source, not a linear-
    algebra routine three calls later."""
    from rdmx.components import describe_encoder
    from rdmx.errors import RdmxError

    at = f" at step {step}" if step is not None else ""
    if not torch.isfinite(samples).all():
        bad = int((~torch.isfinite(samples.reshape(len(samples), -1))).any(dim=1).sum())
        raise RdmxError(f"evaluation{at}: the generator made {bad} of {len(samples)} samples with NaN or inf values")
    for label, f in feats.items():
        if not torch.isfinite(f).all():
            bad = int((~torch.isfinite(f)).any(dim=1).sum())
            raise RdmxError(f"evaluation{at}: {describe_encoder(label, encoders[label])} returned non-finite "
                            f"features for {bad} of {len(f)} finite generated samples")


@torch.no_grad()
def evaluate_generator(
    generator, encoders: Mapping[str, torch.nn.Module], roles: Mapping[str, str], refs: Mapping[str, Any],
    eval_config, *, chunk: int, device: torch.device, metrics=(), data=None, step: int | None = None,
) -> Evaluation:
    """``eval_config`` is the recipe's ``[eval]`` block; ``refs`` hold each encoder's banks."""
    from rdmx.evaluate.base import EncoderFeatures, EvalContext
    from rdmx.evaluate.suite import evaluate_features

    e = eval_config
    samples, cond = generate(generator, e.n, e.seed + EVAL_NOISE_SALT, chunk, device)
    feats = encode_all(encoders, samples, chunk)
    check_finite(samples, feats, encoders, step)
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
