"""Balancers: the per-encoder weights λ of the training loss Σ_φ λ_φ · raw_φ / (|raw_φ| + ε).

A balancer holds ``weights`` (the λ used for the current step). After each step the engine calls
``update(scores)`` with the live raw score of every training encoder; the balancer returns and
stores the λ for the next step. State is plain JSON (``state_dict`` / ``load_state_dict``).
Pure Python: no torch, no numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rdmx.errors import RdmxError
from rdmx.represent.balancer_plugin import FixedConfig, LagrangianConfig, UniformConfig


def _checked(values: Mapping[str, float], names: list[str], what: str) -> dict[str, float]:
    """``values`` as floats for exactly ``names``; missing, unknown or non-finite entries are errors."""
    missing = [n for n in names if n not in values]
    unknown = sorted(set(values) - set(names))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unknown:
            parts.append(f"unknown {unknown}")
        raise RdmxError(f"{what}: {'; '.join(parts)} (training encoders: {names})")
    out = {n: float(values[n]) for n in names}
    bad = {n: v for n, v in out.items() if not math.isfinite(v)}
    if bad:
        raise RdmxError(f"{what}: non-finite values {bad}")
    return out


class Balancer:
    """Base class: constant weights; subclasses override :meth:`_next_weights`."""

    kind = "balancer"
    needs_floors = False

    def __init__(self, names: list[str], config: Any = None):
        names = list(names)
        if not names:
            raise RdmxError(f"{self.kind} balancer: no training encoders")
        if len(set(names)) != len(names):
            raise RdmxError(f"{self.kind} balancer: duplicate encoder names in {names}")
        self.names = names
        self.config = config
        self.weights: dict[str, float] = {n: 1.0 for n in names}
        self.floors: dict[str, float] | None = None
        self.step = 0

    @classmethod
    def from_config(cls, config: Any, names: list[str]) -> Balancer:
        """The registry factory shape: ``factory(config, names)``."""
        return cls(names, config)

    def set_floors(self, floors: Mapping[str, float]) -> None:
        """The real-data floor b of every training encoder (its score on real validation draws)."""
        self.floors = _checked(floors, self.names, f"{self.kind} balancer floors")

    def update(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Consume the live raw scores of one step; store and return the λ for the next step."""
        scores = _checked(scores, self.names, f"{self.kind} balancer scores")
        self.weights = self._next_weights(scores)
        self.step += 1
        return dict(self.weights)

    def _next_weights(self, scores: dict[str, float]) -> dict[str, float]:
        return dict(self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "names": list(self.names),
            "step": self.step,
            "weights": dict(self.weights),
            "floors": None if self.floors is None else dict(self.floors),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind or list(state.get("names", [])) != self.names:
            raise RdmxError(
                f"balancer state is for {state.get('kind')!r} over {state.get('names')}, "
                f"not {self.kind!r} over {self.names}"
            )
        self.step = int(state["step"])
        self.weights = {n: float(state["weights"][n]) for n in self.names}
        floors = state.get("floors")
        self.floors = None if floors is None else {n: float(floors[n]) for n in self.names}


class UniformBalancer(Balancer):
    """λ = ``config.weight`` (default 1) for every training encoder."""

    kind = "uniform"

    def __init__(self, names: list[str], config: UniformConfig | None = None):
        config = config or UniformConfig()
        super().__init__(names, config)
        self.weights = {n: float(config.weight) for n in self.names}


class FixedBalancer(Balancer):
    """Constant per-encoder λ given by name; names that are not training encoders are errors."""

    kind = "fixed"

    def __init__(self, names: list[str], config: FixedConfig | None = None):
        config = config or FixedConfig()
        super().__init__(names, config)
        unknown = sorted(set(config.weights) - set(self.names))
        if unknown:
            raise RdmxError(
                f"fixed balancer: weights given for {unknown}, which are not training encoders "
                f"(training encoders: {self.names})"
            )
        missing = [n for n in self.names if n not in config.weights]
        if missing and config.default is None:
            raise RdmxError(
                f"fixed balancer: no weight for {missing}; list them in weights or set a default"
            )
        self.weights = {n: float(config.weights.get(n, config.default)) for n in self.names}


class LagrangianBalancer(Balancer):
    """The iRDM proportional Lagrangian controller; constraint per encoder: score ≤ floor.

    After each step, per encoder: s̄ = s on the first step, else β·s̄ + (1−β)·s;
    err = clip(s̄ − b, −c, c) (or clip((s̄ − b)/|b|, −c, c) when ``normalised``);
    z = Kp·err + Ki·Σerr + Kd·Δerr (Σerr includes the current err; Δerr = 0 on the first step).
    Softmax mode: violators {z > 0} get Σ·softmax(z / (T·mean_violators(z))), all others 0
    (dividing by the violators' mean z makes the split invariant to the scale of z).
    Clipped mode: λ = clip(z, 0, λ_max). Before the first update λ = ``initial`` (1).
    """

    kind = "lagrangian"
    needs_floors = True

    def __init__(self, names: list[str], config: LagrangianConfig | None = None):
        config = config or LagrangianConfig()
        super().__init__(names, config)
        self.budget = float(config.budget) if config.budget is not None else float(len(self.names))
        self.weights = {n: float(config.initial) for n in self.names}
        self.ema: dict[str, float] = {}
        self.err_sum = {n: 0.0 for n in self.names}
        self.err_prev: dict[str, float] = {}
        self.last_z: dict[str, float] = {}

    def error(self, ema: float, floor: float) -> float:
        """The clipped constraint violation of one encoder."""
        cfg = self.config
        if cfg.normalised:
            if floor == 0.0:
                raise RdmxError("lagrangian balancer: normalised error needs non-zero floors")
            err = (ema - floor) / abs(floor)
        else:
            err = ema - floor
        return min(max(err, -cfg.err_clip), cfg.err_clip)

    def _next_weights(self, scores: dict[str, float]) -> dict[str, float]:
        if self.floors is None:
            raise RdmxError(
                "lagrangian balancer: floors are not set; call set_floors() with the real-data "
                "floor of every training encoder before the first update"
            )
        cfg = self.config
        z: dict[str, float] = {}
        for n in self.names:
            s = scores[n]
            self.ema[n] = s if n not in self.ema else cfg.beta * self.ema[n] + (1.0 - cfg.beta) * s
            err = self.error(self.ema[n], self.floors[n])
            self.err_sum[n] += err
            delta = err - self.err_prev[n] if n in self.err_prev else 0.0
            self.err_prev[n] = err
            z[n] = cfg.kp * err + cfg.ki * self.err_sum[n] + cfg.kd * delta
        self.last_z = z
        if cfg.mode == "clipped":
            return {n: min(max(z[n], 0.0), cfg.lambda_max) for n in self.names}
        return softmax_split(z, self.budget, cfg.temperature)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            ema=dict(self.ema), err_sum=dict(self.err_sum), err_prev=dict(self.err_prev), last_z=dict(self.last_z)
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema = {n: float(v) for n, v in state["ema"].items()}
        self.err_sum = {n: float(state["err_sum"][n]) for n in self.names}
        self.err_prev = {n: float(v) for n, v in state["err_prev"].items()}
        self.last_z = {n: float(v) for n, v in state.get("last_z", {}).items()}


def softmax_split(z: Mapping[str, float], budget: float, temperature: float) -> dict[str, float]:
    """Violators {z > 0} share ``budget`` by softmax(z / (T·mean_violators(z))); others get 0."""
    violators = [n for n, v in z.items() if v > 0.0]
    weights = {n: 0.0 for n in z}
    if not violators:
        return weights
    scale = temperature * sum(z[n] for n in violators) / len(violators)
    logits = {n: z[n] / scale for n in violators}
    top = max(logits.values())
    exp = {n: math.exp(v - top) for n, v in logits.items()}
    total = sum(exp.values())
    for n in violators:
        weights[n] = budget * exp[n] / total
    return weights
