"""Exponential moving averages of the generator, and EDM2's post-hoc EMA.

**The EMA** (``[train.ema]``): after each optimiser step, θ̄ ← β·θ̄ + (1 − β)·θ over the trainable
parameters, with β = ``decay``, or β = 2^(−N·k / h) for a half-life of h generated images
(N images per step, an update every k steps), h capped by EDM's ramp-up at ``rampup`` × the images
generated so far, and β = 0 during ``warmup_steps``. The averages are float32 copies of the
parameters' local tensors: under FSDP2 each rank averages its own shard (``torch._foreach_lerp_``,
no gather), and they are checkpointed with the generator (state-dict entry ``ema``) and restored
exactly, so a resumed run's EMA equals an uninterrupted run's bit for bit.

**Post-hoc EMA** (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", EDM2). A power-function profile of exponent γ averages the weights seen so far with density
p_{γ,t}(τ) = (γ + 1) τ^γ / t^{γ+1} on [0, t]; its standard deviation relative to t is
σ_rel = √((γ + 1) / ((γ + 2)² (γ + 3))). The update after the t-th step is β_t = (1 − 1/t)^{γ+1},
which gives step k the weight (k^{γ+1} − (k − 1)^{γ+1}) / t^{γ+1}: exactly the profile's mass on
(k − 1, k], so the discrete average is the profile applied to the piecewise-constant trajectory of
the weights. Two profiles (``posthoc``, entries ``ema-posthoc-<σ>``) are tracked; their snapshots are
the run's milestones. Afterwards (:func:`solve_posthoc`) the average of any other σ_rel at any
snapshot time is the combination Σ x_i θ̂_i of the snapshots that best matches its profile in
least squares over these step masses (the L² inner products of the profiles, in closed form).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from rdmx.train.shard import local


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """γ with σ_rel(γ) = ``sigma_rel``: the real root above −1 of
    γ³ + 7γ² + (16 − 1/σ²)γ + (12 − 1/σ²) = 0 (σ² (γ+2)² (γ+3) = γ + 1 expanded)."""
    if not 0 < sigma_rel < math.sqrt(1 / 12):  # σ_rel(γ → −1) → 0 ... σ_rel(0) = √(1/12)
        raise ValueError(f"σ_rel must lie in (0, {math.sqrt(1 / 12):.4f}), got {sigma_rel}")
    inv = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and r.real > -1]
    return float(max(real))


def gamma_to_sigma_rel(gamma: float) -> float:
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def profile_name(sigma_rel: float) -> str:
    """The checkpoint entry of a post-hoc profile: ``ema-posthoc-0.050``."""
    return f"ema-posthoc-{sigma_rel:.3f}"


def step_masses(gamma: float, t: int, total: int) -> np.ndarray:
    """The weight of each of steps 1..``total`` in the power EMA of exponent ``gamma`` after ``t``
    updates (zero past ``t``), in float64: (k^{γ+1} − (k − 1)^{γ+1}) / t^{γ+1}."""
    k = np.arange(1, total + 1, dtype=np.float64)
    w = (k ** (gamma + 1) - (k - 1) ** (gamma + 1)) / float(t) ** (gamma + 1)
    w[k > t] = 0.0
    return w


def solve_posthoc(snapshots: Sequence[tuple[float, int]], target: tuple[float, int]) -> np.ndarray:
    """Coefficients x of the snapshots ``[(γ_i, t_i)]`` whose combination best matches the power EMA
    ``target = (γ_r, t_r)``: least squares over the step masses of steps 1..max t (float64). Exact
    when the target is in the span of the snapshots (e.g. it is one of them)."""
    total = max([t for _, t in snapshots] + [target[1]])
    basis = np.stack([step_masses(g, t, total) for g, t in snapshots], axis=1)
    goal = step_masses(*target, total)
    x, *_ = np.linalg.lstsq(basis, goal, rcond=None)
    return x


def profile_residual(snapshots: Sequence[tuple[float, int]], target: tuple[float, int], x: np.ndarray) -> float:
    """‖Σ x_i m_i − m_r‖₁: the step mass the reconstruction misplaces (0: exact, 2: all of it)."""
    total = max([t for _, t in snapshots] + [target[1]])
    got = sum(xi * step_masses(g, t, total) for xi, (g, t) in zip(x, snapshots))
    return float(np.abs(got - step_masses(*target, total)).sum())


class GeneratorEMA:
    """The EMA (``ema``) and post-hoc profiles (``ema-posthoc-<σ>``) of a generator's trainable
    parameters; each average is a copy of the parameters (DTensors when they are sharded)."""

    def __init__(self, generator: torch.nn.Module, config, images_per_step: int, dtype=torch.float32):
        self.config = config
        self.images_per_step = images_per_step
        named = [(n, p) for n, p in generator.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.gammas: dict[str, float | None] = {}
        if config.half_life_images or config.decay:
            self.gammas["ema"] = None
        for s in config.posthoc:
            self.gammas[profile_name(s)] = sigma_rel_to_gamma(s)
        with torch.no_grad():
            self.averages = {key: [p.detach().clone().to(dtype) for p in self.params] for key in self.gammas}
        self.updates = 0  # optimiser steps averaged so far (the post-hoc profiles' t)

    # -- the rule -------------------------------------------------------------------------
    def beta(self, key: str, done: int) -> float:
        """β of profile ``key`` for the update after step ``done`` (1-based), ``self.updates`` counting it."""
        gamma = self.gammas[key]
        if gamma is not None:
            return (1.0 - 1.0 / self.updates) ** (gamma + 1)
        c = self.config
        if done <= c.warmup_steps:
            return 0.0
        if c.decay:
            return c.decay ** c.update_every if c.update_every > 1 else c.decay
        half_life = c.half_life_images
        if c.rampup:
            half_life = min(half_life, c.rampup * done * self.images_per_step)
        return 0.5 ** (self.images_per_step * c.update_every / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, done: int) -> None:
        """Average the parameters after step ``done`` (1-based), every ``update_every`` steps."""
        if done % self.config.update_every:
            return
        self.updates += 1
        current = [local(p.detach()) for p in self.params]
        if current and current[0].dtype != self.averages[next(iter(self.averages))][0].dtype:
            current = [t.to(self.averages[next(iter(self.averages))][0].dtype) for t in current]
        for key, avg in self.averages.items():
            torch._foreach_lerp_([local(a) for a in avg], current, 1.0 - self.beta(key, done))

    # -- checkpoints ------------------------------------------------------------------------
    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """The checkpoint entries: ``{key: {parameter name: average}}`` (loaded in place)."""
        return {key: dict(zip(self.names, avg)) for key, avg in self.averages.items()}

    def small_state(self) -> dict:
        return {"updates": self.updates, "profiles": {k: g for k, g in self.gammas.items()}}

    def load_small_state(self, state: dict) -> None:
        self.updates = int(state.get("updates", 0))

    # -- evaluation -------------------------------------------------------------------------
    @contextlib.contextmanager
    def swapped_in(self, key: str = "ema") -> Iterator[None]:
        """The generator with the average ``key`` in its parameters for the block (then its own)."""
        with torch.no_grad():
            saved = [local(p.detach()).clone() for p in self.params]
            for p, a in zip(self.params, self.averages[key]):
                local(p.detach()).copy_(local(a))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    local(p.detach()).copy_(s)
