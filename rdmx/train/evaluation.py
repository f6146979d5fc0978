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
EXTRA_NOISE_SALT = 1_000_003  # chunk i beyond eval.n: seed + EVAL_NOISE_SALT + this + i


@dataclass
class Evaluation:
    result: Any  # rdmx.evaluate.suite.EvalResult (extra metrics merged into its summary)
    samples: torch.Tensor
    cond: torch.Tensor | None

    def scalars(self) -> dict[str, float]:
        """Flat metrics for trackers (per-encoder SW numerators/denominators left out)."""
        return {k: float(v) for k, v in self.result.flat().items() if not k.startswith(("sw_gen", "sw_val"))}


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
    streamed = [m for m in metrics if getattr(m, "stream_samples", 0)]
    for m in streamed:
        for s in range(0, e.n, chunk):
            m.observe(samples[s : s + chunk], None if cond is None else cond[s : s + chunk])
    # samples beyond eval.n (MMDr's mmd_n, FID-50K's 50,000): generated chunk by chunk from their own
    # fixed noise, encoded and streamed, never all held at once; the first eval.n are unchanged
    total = max([e.bank_rows()] + [min(m.stream_samples, 10**9) for m in streamed])
    extra = {k: [] for k in encoders}
    for i, start in enumerate(range(e.n, total, chunk)):
        rows = min(chunk, total - start)
        more, more_cond = generate(generator, rows, e.seed + EVAL_NOISE_SALT + EXTRA_NOISE_SALT + i, chunk, device)
        if start < e.bank_rows():
            for k, f in encode_all(encoders, more, chunk).items():
                extra[k].append(f)
        for m in streamed:
            if start < m.stream_samples:
                m.observe(more, more_cond)
    feats = {k: torch.cat([f, *extra[k]]) for k, f in feats.items()}
    train = {k: refs[k].train_bank for k in encoders}
    val = {k: refs[k].val_bank for k in encoders}
    # each encoder's three sets are cut to min(n, bank rows) by seeded subsamples (mmd_n for MMDr)
    result = evaluate_features(feats, train, val, dict(roles), n=e.n, mmd_n=e.mmd_n, directions=e.directions,
                               seed=e.seed, metrics=tuple(e.suite), device=device)
    if metrics:
        ctx = EvalContext(
            features={k: EncoderFeatures(feats[k], train[k], val[k], roles[k]) for k in encoders},
            samples=samples.cpu(), labels=None if cond is None else cond.cpu(), step=step,
        )
        ctx.data = data  # sample metrics on toy data (spiral) read the data's geometry
        for metric in metrics:
            result.summary.update({k: float(v) for k, v in metric(ctx).items()})
    return Evaluation(result, samples, cond)
