"""Builtin balancers: config models and names only (torch-free); factories are imported lazily.

Every factory is called as ``factory(config, names)`` with the names of the training encoders
and returns a :class:`rdmx.represent.balancers.Balancer`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from rdmx.registry import ComponentConfig


class UniformConfig(ComponentConfig):
    """Every training encoder gets the same weight."""

    weight: float = Field(1.0, ge=0.0, description="the weight of every encoder")


class FixedConfig(ComponentConfig):
    """Per-encoder weights by name."""

    weights: dict[str, float] = Field(default_factory=dict, description="encoder name -> weight")
    default: float | None = Field(
        None, ge=0.0, description="weight of encoders not listed; None: every encoder must be listed"
    )

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not (math.isfinite(v) and v >= 0.0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        return value


class LagrangianConfig(ComponentConfig):
    """The paper's proportional Lagrangian controller (constraint per encoder: score <= floor)."""

    mode: Literal["softmax", "clipped"] = Field(
        "softmax", description="softmax: violators share the budget; clipped: lambda = clip(z, 0, lambda_max)"
    )
    beta: float = Field(0.5, ge=0.0, lt=1.0, description="EMA factor of the score: s_bar = beta*s_bar + (1-beta)*s")
    err_clip: float = Field(5.0, gt=0.0, description="the error is clipped to [-err_clip, err_clip]")
    normalised: bool = Field(False, description="error (s_bar - b)/|b| instead of s_bar - b")
    kp: float = Field(1.0, description="proportional gain")
    ki: float = Field(0.0, description="integral gain (on the running sum of errors)")
    kd: float = Field(0.0, description="derivative gain (on err - previous err; 0 on the first step)")
    temperature: float = Field(2.0, gt=0.0, description="softmax temperature T, relative to mean violator z")
    budget: float | None = Field(
        None, gt=0.0, description="total weight Sigma shared by violators; None: number of training encoders"
    )
    lambda_max: float = Field(10.0, gt=0.0, description="upper clip of lambda in clipped mode")
    initial: float = Field(1.0, ge=0.0, description="lambda of every encoder before the first update")


def register_balancers(register) -> None:
    """Register the builtin balancers ``uniform``, ``fixed`` and ``lagrangian``."""
    register(
        "uniform",
        "rdmx.represent.balancers:UniformBalancer.from_config",
        config=UniformConfig,
        description="Constant equal weight for every training encoder.",
    )
    register(
        "fixed",
        "rdmx.represent.balancers:FixedBalancer.from_config",
        config=FixedConfig,
        description="Constant per-encoder weights given by name.",
    )
    register(
        "lagrangian",
        "rdmx.represent.balancers:LagrangianBalancer.from_config",
        config=LagrangianConfig,
        description=(
            "Proportional Lagrangian controller (iRDM): encoders above their real-data floor share "
            "a weight budget by a softmax of their violation; satisfied encoders get 0."
        ),
        needs_floors=True,
    )
