"""MMDr by the paper's protocol: its own row count (eval.mmd_n = 50,000 in the paper recipes), sigma
from 10,000 train rows, and a label on every smaller-sample value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdmx.evaluate.rff import median_sigma, mmd_ratio
from rdmx.evaluate.suite import PAPER_MMD_ROWS, evaluate_features, mmd_protocol
from rdmx.recipe import load_recipe


def sets(seed, rows, dim=6, shift=0.0):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.standard_normal((rows, dim)) + shift)


def test_mmd_uses_its_own_rows_and_is_labelled():
    gen, train, val = sets(0, 900, shift=0.3), sets(1, 900), sets(2, 900)
    res = evaluate_features({"a": gen}, {"a": train}, {"a": val}, {"a": "train"}, n=200, mmd_n=800,
                            directions=16, rff_features=256)
    want = mmd_ratio(gen, train, val, n=800, features=256)  # the same seeded 800-row subsamples
    assert res.encoders["a"]["mmd_r"] == pytest.approx(want.ratio, rel=1e-10)
    assert res.settings["rows"]["a"] == 200 and res.settings["mmd_rows"] == 800
    assert res.summary["mmd_r_rows"] == 800.0
    assert res.settings["mmd_protocol"].startswith("small-sample: 800 rows")
    headers = [c.header for c in res.table().columns]
    assert "mmd_r (small-sample, 800 rows)" in headers
    assert "small-sample" in str(res.table().caption)


def test_protocol_label():
    assert mmd_protocol(PAPER_MMD_ROWS, 4096).startswith("paper")
    assert mmd_protocol(16_384, 4096).startswith("small-sample")
    assert mmd_protocol(PAPER_MMD_ROWS, 1024).startswith("small-sample")


def test_sigma_is_the_median_of_10000_train_rows():
    x = sets(3, 12_000, dim=3)
    sub = np.sort(np.random.default_rng([0, 4]).permutation(12_000)[:10_000])
    from scipy.spatial.distance import pdist

    want = np.sqrt(np.median(pdist(x.numpy()[sub], "sqeuclidean")))
    assert median_sigma(x) == pytest.approx(want, rel=1e-12)


def test_paper_recipe_uses_the_paper_protocol():
    e = load_recipe("recipes/irdm_panel.toml").recipe.eval
    assert (e.n, e.mmd_n, e.bank_rows()) == (16_384, 50_000, 50_000)


def test_training_evaluation_generates_mmd_n_samples(tmp_path):
    from rdmx.train.loop import Trainer
    from tests.test_engine import tiny

    trainer = Trainer(tiny(tmp_path, "eval.n=64", "eval.mmd_n=150", "train.steps=0"), tmp_path / "run", progress=False)
    summary = trainer.run(resume=False)
    final = summary["final"]
    assert final["eval/mmd_r_rows"] == 150.0
    assert summary["eval_protocol"]["mmd_r"].startswith("small-sample: 150 rows")
    assert trainer.last_samples is None  # image samples are generated, encoded and dropped chunk by chunk
