"""The ``pickscore`` evaluation metric: mean PickScore, and the win rate over reference samples."""

from __future__ import annotations

from rdmx.evaluate.base import EvalContext, Metric
from rdmx_pickscore.plugin import PickScoreConfig
from rdmx_pickscore.scorer import PickScorer, load_scorer, win_rate


class PickScoreMetric(Metric):
    """Reads ``samples`` and their prompts (``labels``); with ``reference_samples`` (same noise and
    prompts) also reports the reference's mean and the win rate of the samples over it."""

    name = "pickscore"
    requires = ("samples", "labels")

    def __init__(self, config: PickScoreConfig | None = None, scorer: PickScorer | None = None):
        self.config = config or PickScoreConfig()
        self.scorer = scorer if scorer is not None else load_scorer(self.config)

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        self.check(ctx)
        prompts = list(ctx.labels)
        scores = self.scorer.score(ctx.samples, prompts)
        out = {"pickscore": float(scores.double().mean())}
        if ctx.reference_samples is not None:
            ref = self.scorer.score(ctx.reference_samples, prompts)
            out["pickscore_reference"] = float(ref.double().mean())
            out["pickscore_win_rate"] = win_rate(scores, ref)
        return out
