"""pluggy hook specifications: one register-callback hook per component kind.

A plugin module implements any of these with ``@rdmx.hookimpl`` and calls
``register(name, factory, config=ConfigModel, description=..., **meta)`` for each component.
"""

from __future__ import annotations

import pluggy

PROJECT = "rdmx"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

KINDS = ("encoders", "estimators", "balancers", "generators", "datasets", "metrics", "prompts")


class RdmxSpec:
    @hookspec
    def rdmx_register_encoders(self, register):
        """Register encoders: factory(config) -> rdmx.represent.encoder.Encoder."""

    @hookspec
    def rdmx_register_estimators(self, register):
        """Register comparison estimators: factory(config) -> rdmx.compare.base.Estimator."""

    @hookspec
    def rdmx_register_balancers(self, register):
        """Register balancers: factory(config, names) -> rdmx.represent.balancers.Balancer."""

    @hookspec
    def rdmx_register_generators(self, register):
        """Register generators: factory(config, info: DataInfo) -> rdmx.train.generator.Generator."""

    @hookspec
    def rdmx_register_datasets(self, register):
        """Register datasets: factory(config) -> rdmx.data.RealData."""

    @hookspec
    def rdmx_register_metrics(self, register):
        """Register metrics: factory(config) -> rdmx.evaluate.base.Metric."""

    @hookspec
    def rdmx_register_prompts(self, register):
        """Register prompt pools: factory(config) -> rdmx.data.prompts.PromptPool.

        A pool is the ordered list of text conditions of a text-to-image generator: the recipe's
        ``[prompts]`` block names one (without it, the captions of captioned data are the pool).
        Condition ids index the pool; the generator and the text-joint law read the same prompt."""
