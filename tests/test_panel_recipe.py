"""The paper's configuration as a recipe: it validates, carries the protocol's constants, and
builds every panel encoder (tiny random weights) on a synthetic image folder."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from rdmx.recipe import load_recipe, read_recipe, validate_recipe
from rdmx.train.build import build_components
from tests.helpers import ROOT, rdmx

RECIPE = ROOT / "recipes" / "irdm_panel.toml"
TRAIN = {"inception", "convnext", "mae", "clip", "dinov3", "pe-core", "siglip2", "aimv2", "webssl", "dreamsim"}
HELDOUT = {"dinov2", "siglip", "radio", "flux-vae"}


def test_panel_recipe_carries_the_protocol():
    r = load_recipe(RECIPE)
    roles = {e.name: e.role for e in r.recipe.battery.encoders}
    assert {n for n, v in roles.items() if v == "train"} == TRAIN
    assert {n for n, v in roles.items() if v == "heldout"} == HELDOUT
    t = r.recipe.train
    assert (t.batch, t.micro_batch) == (5120, "auto")  # probed on the machine; the gradient does not depend on it
    assert (t.lr, t.betas, t.weight_decay, t.grad_clip, t.steps) == (1.6e-6, (0.9, 0.95), 0.0, 2.0, 4000)
    est = r.config("estimator")
    assert (est.landmarks, est.kmeans_iters, est.kmeans_subsample, est.sigma_scale) == (4096, 20, 200_000, 1.0)
    bal = r.config("balancer")
    assert (bal.kp, bal.ki, bal.kd, bal.beta, bal.err_clip, bal.temperature, bal.mode) == (1.0, 0.0, 0.0, 0.5, 5.0, 2.0, "softmax")
    assert (r.recipe.eval.n, r.recipe.eval.directions) == (16384, 1024)
    assert (r.recipe.reference.floor_draws, r.recipe.reference.floor_rows) == (8, 5120)


def test_every_panel_encoder_builds_on_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / split / c / f"{i}.png")
    raw = read_recipe(RECIPE)  # with the included battery
    raw["data"].update(path=str(tmp_path / "train"), val_path=str(tmp_path / "val"), size=32)
    raw["generator"].update(width=8, noise_dim=8)
    # radio's architecture is remote code (not available offline): validated above, not built here
    raw["battery"]["encoders"] = [
        {**e, "weights": "random", "tiny": True} for e in raw["battery"]["encoders"] if e["name"] != "radio"
    ]
    c = build_components(validate_recipe(raw, "irdm_panel (test)"))
    assert set(c.encoders) == (TRAIN | HELDOUT) - {"radio"}
    assert c.data.num_classes == 2 and c.info.sample_shape == (3, 32, 32)
    x = c.generator(c.generator.sample_noise(2, torch.Generator().manual_seed(0)), torch.tensor([0, 1]))
    for name, enc in c.encoders.items():
        f = enc(x.detach())
        assert f.shape[0] == 2 and f.ndim == 2, name


def test_missing_folder_is_a_clear_error(tmp_path):
    res = rdmx("run", str(RECIPE), "--dry-run", "--set", f"data.path={json.dumps(str(tmp_path / 'nope'))}", cwd=tmp_path)
    assert res.returncode == 2 and "nope" in res.stderr and "Traceback" not in res.stderr
