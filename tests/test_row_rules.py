"""reference.rows: the real rows of k_rr and of MMDr's real sets, a seeded subsample of the pool
(rdmx) or its first rows in the pool's order (the paper's release, on its class-sorted pool), each
against a float64 brute force on a small class-sorted pool; recorded in fingerprints and eval.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from rdmx.compare.base import ReferenceRequest
from rdmx.compare.configs import JointSpec
from rdmx.errors import RdmxError
from rdmx.evaluate.features import STREAM_GEN
from rdmx.evaluate.rff import RFF_SEED, median_sigma
from rdmx.evaluate.suite import evaluate_features
from rdmx.recipe import load_recipe
from rdmx.reference.bundle import build_reference
from rdmx.reference.extract import FeatureSet
from tests.test_engine import tiny


def sorted_pool(per_class=60, classes=5, d=4, seed=0):
    """A class-sorted pool: class c's rows (centred at 3c) follow class c-1's, as in a sorted folder."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.cat([torch.randn(per_class, d, generator=gen) + 3.0 * c for c in range(classes)])
    return feats, torch.arange(classes).repeat_interleave(per_class)


def stream(x, cond, sizes=(37, 11, 64)):
    """Chunks of uneven sizes, so the first rows span chunk boundaries."""
    def chunks():
        i, k = 0, 0
        while i < len(x):
            step = sizes[k % len(sizes)]
            yield x[i : i + step], None if cond is None else cond[i : i + step]
            i, k = i + step, k + 1

    return chunks


def k_rr(ref, krr, rule, joint=None, cond=None):
    request = ReferenceRequest(landmarks=8, kmeans_subsample=400, krr_subsample=krr, krr_rows=rule, scales=(0.5, 1.0))
    return build_reference(stream(ref, cond), request, joint=joint, encoder_fingerprint="e", data_fingerprint="d")


def gaussian_mean(x, sigma):
    return np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma**2)).mean()  # V-statistic, diagonal kept


def test_k_rr_over_the_first_rows_against_float64():
    x, labels = sorted_pool()
    built = k_rr(x, 70, "first")
    x64 = x.double().numpy()
    for s, scale in enumerate(built.scales):
        assert float(built.k_rr[s]) == pytest.approx(gaussian_mean(x64[:70], built.sigma * scale), rel=1e-12)
    assert built.request.krr_rows == "first" and built.request.to_dict()["krr_rows"] == "first"
    # the random rule on the same sorted pool: every class, not the first class and a bit of the second
    rand = k_rr(x, 70, "random")
    assert rand.sigma == built.sigma and float(rand.k_rr[1]) < 0.7 * float(built.k_rr[1])
    assert "krr_rows" not in rand.request.to_dict()  # the default keeps earlier bundles' fingerprints
    # every row: both rules take the whole pool
    assert float(k_rr(x, 300, "first").k_rr[1]) == pytest.approx(gaussian_mean(x64, built.sigma), rel=1e-12)


def test_k_rr_first_rows_of_a_class_joint_law():
    x, labels = sorted_pool()
    built = k_rr(x, 90, "first", joint=JointSpec(kind="class", class_scale=1.0), cond=labels)
    onehot = np.eye(5)[labels.numpy()[:90]] * built.joint["weight"]
    rows = np.concatenate([x.double().numpy()[:90], onehot], axis=1)
    assert float(built.k_rr[1]) == pytest.approx(gaussian_mean(rows, built.sigma), rel=1e-12)


def test_first_rows_larger_than_the_pool_name_the_setting():
    x, _ = sorted_pool()
    with pytest.raises(RdmxError, match=r"first estimator.krr_subsample = 301 rows of the train pool, which has 300"):
        k_rr(x, 301, "first")
    with pytest.raises(RdmxError, match="reference rows must be one of"):
        ReferenceRequest(krr_rows="last")
    with pytest.raises(RdmxError, match="disagree on krr_rows"):
        ReferenceRequest(krr_rows="first").merge(ReferenceRequest())


def rff_mmd2_brute(a, b, sigma, features):
    """|mean φ(a) − mean φ(b)|², φ(x) = [cos xW, sin xW]/sqrt(D), W from the evaluation's RFF seed."""
    w = np.random.default_rng(RFF_SEED).standard_normal((a.shape[1], features)) / sigma
    emb = lambda x: np.concatenate([np.cos(x @ w), np.sin(x @ w)], axis=1).mean(0) / np.sqrt(features)  # noqa: E731
    return float(((emb(a) - emb(b)) ** 2).sum())


def test_mmdr_over_the_first_rows_against_float64():
    train, _ = sorted_pool(seed=1)
    val, _ = sorted_pool(seed=2)
    gen = torch.randn(200, 4, dtype=torch.float64) * 4 + 6
    banks = {"a": train[torch.randperm(300)[:250]]}  # the seeded random bank (sigma comes from it)
    kw = dict(n=120, mmd_n=90, directions=8, rff_features=64, metrics=("mmdr",))
    res = evaluate_features({"a": gen}, banks, {"a": val[:250]}, {"a": "train"},
                            mmd_first={"a": (train, val)}, **kw)
    rows = np.sort(np.random.default_rng([0, STREAM_GEN]).permutation(200)[:90])
    g = gen.numpy()[rows]
    sigma = res.encoders["a"]["sigma"]
    assert sigma == median_sigma(np.asarray(banks["a"], dtype=np.float64)[np.sort(
        np.random.default_rng([0, 2]).permutation(250)[:90])])  # the random rule's 90 train rows
    t, v = train.double().numpy()[:90], val.double().numpy()[:90]
    num, den = rff_mmd2_brute(g, t, sigma, 64), rff_mmd2_brute(v, t, sigma, 64)
    assert res.encoders["a"]["mmd2_gen"] == pytest.approx(num, rel=1e-10)
    assert res.encoders["a"]["mmd_r"] == pytest.approx(num / den, rel=1e-10)
    assert res.settings["mmd_real_rows"] == "first" and res.settings["mmd_rows"] == 90
    plain = evaluate_features({"a": gen}, banks, {"a": val[:250]}, {"a": "train"}, **kw)
    assert plain.settings["mmd_real_rows"] == "random" and plain.encoders["a"]["sigma"] == sigma
    assert plain.encoders["a"]["mmd_r"] != pytest.approx(res.encoders["a"]["mmd_r"], rel=1e-3)


def test_fingerprints_and_the_paper_recipes():
    base = load_recipe("recipes/quickstart.toml")
    assert base.recipe.reference.rows == "random"
    assert load_recipe("recipes/quickstart.toml", ["reference.rows='random'"]).fingerprint == base.fingerprint
    assert load_recipe("recipes/quickstart.toml", ["reference.rows='first'"]).fingerprint != base.fingerprint
    for paper in ("irdm_imagenet", "irdm_panel", "irdm_flux2_klein", "irdm_imagenet_distance", "irdm_imagenet_batch"):
        assert load_recipe(f"recipes/{paper}.toml").recipe.reference.rows == "first", paper


def test_a_run_with_the_releases_rule_records_it(tmp_path):
    from rdmx.train.loop import Trainer

    resolved = tiny(tmp_path, "train.steps=0", "reference.rows='first'", "estimator.krr_subsample=200",
                    "eval.mmd_n=100")
    trainer = Trainer(resolved, tmp_path / "run", progress=False)
    summary = trainer.run(resume=False)
    assert trainer.refs["conv-a"].reference.request.krr_rows == "first"
    for name, ref in trainer.refs.items():  # training and held-out encoders alike
        assert ref.train_first.shape[0] == 100 and ref.val_first.shape[0] == 100, name
        feats = FeatureSet.open(ref.paths["train_features"]).load_all()[0]
        torch.testing.assert_close(ref.train_first, feats[:100], rtol=0, atol=0)
    assert summary["eval_protocol"]["mmd_r_real_rows"] == "first"
    too_many = tiny(tmp_path, "train.steps=0", "reference.rows='first'", "estimator.krr_subsample=200",
                    "eval.mmd_n=100000")
    with pytest.raises(RdmxError, match=r"first eval.mmd_n = 100,000 rows of each split, and the train split has"):
        Trainer(too_many, tmp_path / "run2", progress=False).run(resume=False)
