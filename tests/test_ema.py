"""The generator's EMA and EDM2's post-hoc EMA: the maths against independent references (scipy,
float64 brute force), a resumed run's EMA bit for bit, reconstruction from a run's snapshots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize

from rdmx.errors import RdmxError
from rdmx.recipe import load_recipe
from rdmx.train.ema import (
    GeneratorEMA,
    gamma_to_sigma_rel,
    profile_residual,
    sigma_rel_to_gamma,
    solve_posthoc,
    step_masses,
)
from rdmx.train.loop import Trainer
from tests.helpers import killed_after_checkpoint
from tests.test_engine import QUICK, tiny


def test_sigma_rel_and_gamma_against_scipy():
    for sigma in (0.01, 0.05, 0.10, 0.2):
        want = optimize.brentq(lambda g: gamma_to_sigma_rel(g) - sigma, 0.0, 1e6, xtol=1e-13)  # γ ≥ 0: the branch used
        assert sigma_rel_to_gamma(sigma) == pytest.approx(want, rel=1e-9)
    # σ_rel is the profile's standard deviation relative to its length t (here t = 1), by numerical integration
    g = sigma_rel_to_gamma(0.05)
    mean = integrate.quad(lambda x: x * (g + 1) * x**g, 0, 1)[0]
    var = integrate.quad(lambda x: (x - mean) ** 2 * (g + 1) * x**g, 0, 1)[0]
    assert math.sqrt(var) == pytest.approx(0.05, rel=1e-7)
    with pytest.raises(ValueError, match="σ_rel must lie in"):
        sigma_rel_to_gamma(0.3)


def _power_ema_brute(traj: np.ndarray, gamma: float) -> np.ndarray:
    """θ̂_t = β_t θ̂_{t−1} + (1 − β_t) θ_t with β_t = (1 − 1/t)^{γ+1}, float64, written out."""
    out = np.zeros_like(traj[0])
    for t in range(1, len(traj) + 1):
        beta = (1 - 1 / t) ** (gamma + 1)
        out = beta * out + (1 - beta) * traj[t - 1]
    return out


def test_power_ema_step_masses_are_its_weights():
    rng = np.random.default_rng(0)
    traj = rng.normal(size=(37, 5))
    for gamma in (sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.15), 0.0):
        m = step_masses(gamma, 37, 37)
        assert m.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.allclose(m @ traj, _power_ema_brute(traj, gamma), rtol=0, atol=1e-12)


class _Params(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))


class _Cfg:  # a [train.ema] block with only post-hoc profiles
    def __init__(self, posthoc):
        self.posthoc, self.half_life_images, self.decay, self.update_every = posthoc, 0.0, 0.0, 1
        self.rampup, self.warmup_steps = 0.0, 0


def _track(traj, sigmas, every):
    """Run GeneratorEMA (float64) along a trajectory; snapshots of each profile every ``every`` steps."""
    module = _Params(traj.shape[1])
    ema = GeneratorEMA(module, _Cfg(sigmas), 1, dtype=torch.float64)
    snaps = []
    for t, row in enumerate(traj, 1):
        module.w.data.copy_(torch.from_numpy(row))
        ema.update(t)
        if t % every == 0:
            snaps += [(ema.gammas[k], t, ema.averages[k][0].clone().numpy()) for k in ema.averages]
    return ema, snaps


def test_post_hoc_reconstruction_matches_the_ema_tracked_directly_float64():
    """Profiles σ_rel 0.05 and 0.10 snapshotted every step reconstruct σ_rel 0.07 (tracked directly
    alongside) to float64 rounding; every 8 steps, within the bound the misplaced step mass gives."""
    rng = np.random.default_rng(1)
    traj = np.cumsum(rng.normal(size=(64, 6)), axis=0)  # a random-walk trajectory
    direct, _ = _track(traj, [0.07], 1)
    want = direct.averages["ema-posthoc-0.070"][0].numpy()
    assert np.allclose(want, _power_ema_brute(traj, sigma_rel_to_gamma(0.07)), atol=1e-12)
    for every, exact in ((1, True), (8, False)):
        _, snaps = _track(traj, [0.05, 0.10], every)
        target = (sigma_rel_to_gamma(0.07), 64)
        x = solve_posthoc([(g, t) for g, t, _ in snaps], target)
        got = sum(xi * v for xi, (_, _, v) in zip(x, snaps))
        residual = profile_residual([(g, t) for g, t, _ in snaps], target, x)
        err = np.abs(got - want).max()
        assert err <= residual * np.abs(traj).max() + 1e-10  # |Σ (m̂_k − m_k) θ_k| ≤ ‖m̂ − m‖₁ max |θ|
        if exact:
            assert residual < 1e-9 and err < 1e-9 * np.abs(want).max()
        else:
            assert 0 < residual < 0.05


def test_ema_rule_half_life_rampup_warmup():
    cfg = load_recipe(QUICK, ["train.ema={half_life_images=1000, rampup=0.5, warmup_steps=2}"]).recipe.train.ema
    ema = GeneratorEMA(_Params(3), cfg, 100)
    assert ema.beta("ema", 2) == 0.0  # warm-up: the EMA follows the weights
    assert ema.beta("ema", 4) == pytest.approx(0.5 ** (100 / 200))  # half-life capped at 0.5 × 400 images
    assert ema.beta("ema", 100) == pytest.approx(0.5 ** (100 / 1000))
    decay = load_recipe(QUICK, ["train.ema={decay=0.99, update_every=4}"]).recipe.train.ema
    assert GeneratorEMA(_Params(3), decay, 100).beta("ema", 8) == pytest.approx(0.99**4)


def test_a_resumed_run_has_the_uninterrupted_runs_ema_bit_for_bit(tmp_path):
    r = tiny(tmp_path, "train.steps=5", "train.checkpoint_every=2", "train.ema={half_life_images=100, rampup=0.5}")
    straight = Trainer(r, tmp_path / "a", progress=False)
    summary = straight.run(resume=False)
    assert "eval_ema/sw_rK_heldout" in summary["final"] and "eval/sw_rK_heldout" in summary["final"]

    with pytest.raises(KeyboardInterrupt):
        killed_after_checkpoint(2)(r, tmp_path / "b", progress=False).run(resume=False)
    resumed = Trainer(r, tmp_path / "b", progress=False)
    resumed.run(resume=True)
    assert resumed.ema.updates == straight.ema.updates == 5
    for a, b in zip(straight.ema.averages["ema"], resumed.ema.averages["ema"], strict=True):
        assert torch.equal(a, b)
    # the EMA is not the weights, and evaluation reads either
    from rdmx.checkpoints import load_generator

    comp, ckpt = load_generator(r, tmp_path / "a")
    assert comp.weights == "ema" and ckpt.keys == ["ema", "generator", "optimizer"]
    params = [p for p in comp.generator.parameters() if p.requires_grad]
    assert all(torch.equal(p, a) for p, a in zip(params, straight.ema.averages["ema"]))
    raw, _ = load_generator(r, tmp_path / "a", "raw")
    assert not all(torch.equal(p, q) for p, q in zip(params, raw.generator.parameters()))


def test_ema_requested_from_a_checkpoint_without_one_is_one_message(tmp_path):
    r = tiny(tmp_path, "train.steps=1")
    Trainer(r, tmp_path / "o", progress=False).run(resume=False)
    from rdmx.checkpoints import load_generator

    with pytest.raises(RdmxError, match=r"holds no EMA of the generator .*use --weights raw"):
        load_generator(r, tmp_path / "o", "ema")


def test_post_hoc_ema_of_a_run_matches_its_directly_tracked_profile(tmp_path):
    """A run tracks σ_rel 0.05, 0.07 and 0.10 with a snapshot every step; `rdmx ema` rebuilds 0.07
    from the 0.05 and 0.10 snapshots alone, to float32 rounding, as a checkpoint eval reads."""
    from rdmx.posthoc import reconstruct

    r = tiny(tmp_path, "train.steps=6", "train.checkpoint_every=1", "train.keep_every=1",
             "train.ema={posthoc=[0.05, 0.07, 0.10]}")
    trainer = Trainer(r, tmp_path / "run", progress=False)
    trainer.run(resume=False)
    folder, report = reconstruct(tmp_path / "run", 0.07, profiles=[0.05, 0.10])
    assert report["snapshots"] == 12 and report["residual_mass"] < 1e-6 and report["step"] == 6
    from rdmx.train.checkpoint import open_checkpoint

    ckpt = open_checkpoint(folder, r.fingerprint)
    direct = dict(zip(trainer.ema.names, trainer.ema.averages["ema-posthoc-0.070"]))
    got = ckpt.read("ema", {k: v.detach() for k, v in direct.items()})
    for k, v in direct.items():
        assert torch.allclose(got[k], v, rtol=1e-4, atol=1e-5), k
    with pytest.raises(RdmxError, match="no snapshot at step 99"):
        reconstruct(tmp_path / "run", 0.07, step=99)


def test_rdmx_ema_sweeps_widths_and_evaluates_them_in_one_command(tmp_path):
    from rdmx.run import run_recipe
    from tests.helpers import rdmx

    r = tiny(tmp_path, "train.steps=4", "train.checkpoint_every=2", "train.keep_every=2",
             "train.ema={posthoc=[0.05, 0.10]}")
    run_recipe(r, tmp_path / "run", progress=False)
    res = rdmx("ema", str(tmp_path / "run"), "--sigma-rel", "0.06", "--sigma-rel", "0.09", "--eval", "--n", "32",
               "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "σ_rel 0.060 at step 4" in res.stdout and "post-hoc EMA of" in res.stdout
    for s in ("0.060", "0.090"):
        ev = json.loads((tmp_path / "run" / "posthoc" / f"sigma-{s}-step-000004" / "eval.json").read_text())
        assert ev["settings"]["weights"] == "ema" and ev["settings"]["step"] == 4
    bad = rdmx("ema", str(tmp_path / "run"), "--sigma-rel", "0.5", cwd=tmp_path)
    assert bad.returncode == 2 and "σ_rel must lie in" in bad.stderr
