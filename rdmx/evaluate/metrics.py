"""The builtin feature metrics ``sw-r``, ``mmd-r`` and ``fd`` as :class:`Metric` objects."""

from __future__ import annotations

from rdmx.evaluate.base import EvalContext, Metric
from rdmx.evaluate.plugin import FdConfig, MmdRatioConfig, SwRatioConfig
from rdmx.evaluate.suite import evaluate_context


class SwRatioMetric(Metric):
    """SW_rK: per-encoder SW₂(gen, train) / SW₂(val, train) and its means."""

    name = "sw-r"

    def __init__(self, config: SwRatioConfig | None = None):
        self.config = config or SwRatioConfig()

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        self.check(ctx)
        c = self.config
        result = evaluate_context(ctx, metrics=("sw",), n=c.n, directions=c.directions, seed=c.seed,
                                  chunk=c.chunk, precision=c.precision)
        return result.flat()


class MmdRatioMetric(Metric):
    """MMDr: per-encoder RFF MMD²(gen, train) / MMD²(val, train) and its means."""

    name = "mmd-r"

    def __init__(self, config: MmdRatioConfig | None = None):
        self.config = config or MmdRatioConfig()

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        self.check(ctx)
        c = self.config
        result = evaluate_context(ctx, metrics=("mmdr",), n=c.n, seed=c.seed, rff_features=c.features,
                                  rff_seed=c.rff_seed)
        return result.flat()


class FdMetric(Metric):
    """Per-encoder Fréchet distance of gen vs train (``fd``) and of val vs train (``fd_val``)."""

    name = "fd"

    def __init__(self, config: FdConfig | None = None):
        self.config = config or FdConfig()

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        self.check(ctx)
        result = evaluate_context(ctx, metrics=("fd",), n=self.config.n, seed=self.config.seed)
        return result.flat()
