"""The evaluation suite, its result object and the registered metrics."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from pydantic import ValidationError
from rich.console import Console

from rdmx.errors import RdmxError
from rdmx.evaluate.base import EncoderFeatures, EvalContext
from rdmx.evaluate.features import equal_size
from rdmx.evaluate.frechet import frechet_distance
from rdmx.evaluate.plugin import register_metrics
from rdmx.evaluate.rff import mmd_ratio
from rdmx.evaluate.sliced import sw_ratio
from rdmx.evaluate.suite import EvalResult, evaluate_features
from rdmx.registry import Entry

ROLES = {"a": "train", "b": "train", "c": "heldout"}
KW = dict(n=400, directions=64, rff_features=256)


@pytest.fixture(scope="module")
def banks():
    rng = np.random.default_rng(0)
    dims = {"a": 5, "b": 8, "c": 3}
    train = {e: rng.normal(size=(900, d)) for e, d in dims.items()}
    val = {e: rng.normal(size=(500, d)) for e, d in dims.items()}
    gen = {e: rng.normal(size=(600, d)) * (1 + 0.2 * i) for i, (e, d) in enumerate(dims.items())}
    return gen, train, val


def test_values_equal_the_individual_metrics_and_means_follow_roles(banks):
    gen, train, val = banks
    res = evaluate_features(gen, train, val, ROLES, **KW)
    for e in ROLES:
        sw = sw_ratio(gen[e], train[e], val[e], n=400, directions=64)
        mmd = mmd_ratio(gen[e], train[e], val[e], n=400, features=256)
        assert res.encoders[e]["sw_r"] == pytest.approx(sw.ratio, rel=1e-12)
        assert res.encoders[e]["sw_gen"] == pytest.approx(sw.gen, rel=1e-12)
        assert res.encoders[e]["mmd_r"] == pytest.approx(mmd.ratio, rel=1e-10)
        import torch

        g, t, v, rows = equal_size(*(torch.as_tensor(s[e]) for s in (gen, train, val)), 400)
        assert rows == 400
        assert res.encoders[e]["fd"] == pytest.approx(frechet_distance(g, t), rel=1e-12)
        assert res.encoders[e]["fd_val"] == pytest.approx(frechet_distance(v, t), rel=1e-12)
    r = {e: res.encoders[e]["sw_r"] for e in ROLES}
    assert res.summary["sw_rK"] == pytest.approx((r["a"] + r["b"] + r["c"]) / 3)
    assert res.summary["sw_rK_train"] == pytest.approx((r["a"] + r["b"]) / 2)
    assert res.summary["sw_rK_heldout"] == pytest.approx(r["c"])
    m = {e: res.encoders[e]["mmd_r"] for e in ROLES}
    assert res.summary["mmd_r"] == pytest.approx(sum(m.values()) / 3)
    assert res.summary["mmd_r_train"] == pytest.approx((m["a"] + m["b"]) / 2)
    # the generators are worse for larger scales: the ranking is visible
    assert r["a"] < r["b"] < r["c"]


def test_result_json_flat_and_table(banks):
    gen, train, val = banks
    res = evaluate_features(gen, train, val, ROLES, metrics=("sw",), **KW)
    back = EvalResult.from_json(res.to_json())
    assert back == res
    assert json.loads(res.to_json())["settings"]["rows"] == {"a": 400, "b": 400, "c": 400}
    flat = res.flat("eval/")
    assert flat["eval/sw_rK"] == res.summary["sw_rK"]
    assert flat["eval/sw_r/c"] == res.encoders["c"]["sw_r"]
    assert "mmd_r" not in res.summary and "fd" not in res.encoders["a"]
    buf = io.StringIO()
    res.render(Console(file=buf, width=120), title="step 10")
    text = buf.getvalue()
    assert "step 10" in text and "heldout" in text and f"{res.summary['sw_rK']:.4f}" in text


def test_user_mistakes_are_clear_errors(banks):
    gen, train, val = banks
    with pytest.raises(RdmxError, match="unknown evaluation metrics"):
        evaluate_features(gen, train, val, ROLES, metrics=("sw", "kid"))
    with pytest.raises(RdmxError, match=r"no generated features for encoders \['d'\]"):
        evaluate_features(gen, train, val, {**ROLES, "d": "train"})
    with pytest.raises(RdmxError, match="roles must be one of"):
        evaluate_features(gen, train, val, {"a": "training"})
    with pytest.raises(RdmxError, match="distinct from the train bank"):
        evaluate_features(train, train, train, {"a": "train"}, n=900, directions=8, metrics=("sw",))
    with pytest.raises(RdmxError, match="feature dims differ"):
        evaluate_features({"a": gen["b"]}, train, val, {"a": "train"})
    with pytest.raises(RdmxError, match="role"):
        EvalContext(features={"a": (gen["a"], train["a"], val["a"], "frozen")})


def test_registered_metrics_build_and_read_the_context(banks):
    gen, train, val = banks
    entries = {}

    def register(name, factory, config, description="", **meta):
        entries[name] = Entry("metrics", name, factory, config, description, "test", "0", meta)

    register_metrics(register)
    assert set(entries) == {"sw-r", "mmd-r", "fd"}
    ctx = EvalContext(features={e: (gen[e], train[e], val[e], ROLES[e]) for e in ROLES})
    assert isinstance(ctx.features["a"], EncoderFeatures) and ctx.roles == ROLES
    sw = entries["sw-r"].build({"n": 400, "directions": 64})(ctx)
    direct = evaluate_features(gen, train, val, ROLES, metrics=("sw",), n=400, directions=64)
    assert sw == direct.flat()
    assert set(entries["mmd-r"].build({"n": 300, "features": 128})(ctx)) >= {"mmd_r", "mmd_r/a", "mmd_r_heldout"}
    fd = entries["fd"].build({"n": 300})(ctx)
    assert set(fd) == {f"{k}/{e}" for k in ("fd", "fd_val") for e in ROLES}
    with pytest.raises(RdmxError, match="needs features"):
        entries["fd"].build({})(EvalContext())
    with pytest.raises(ValidationError):
        entries["sw-r"].build({"directions": 64, "projections": 3})
