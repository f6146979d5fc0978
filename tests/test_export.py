"""A trained generator leaves rdmx: safetensors + config + model card, the release's .pth layout for
pMF, a recipe's generator.weights reading an export back bit for bit, the release's own files read
by rdmx eval / sample, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.export import export_checkpoint
from rdmx.recipe import load_recipe
from rdmx.run import run_recipe
from tests.helpers import rdmx
from tests.test_imagenet_recipe import IMAGENET, data_sets, folder  # noqa: F401 - the fixture

BATTERY = ('battery={encoders = [{name = "toy-conv", label = "conv-a", channels = 3, seed = 1}, '
           '{name = "toy-conv", label = "held", role = "heldout", channels = 3, seed = 2}]}')


def tiny_pmf(folder, tmp, *extra):
    return load_recipe(IMAGENET, [
        *data_sets(folder), "generator.tiny=true", "generator.zero_init=false", 'generator.weights="random"', BATTERY,
        "estimator.landmarks=8", "estimator.kmeans_iters=2", "train.steps=2", "train.batch=8", "train.micro_batch=4",
        "train.sample_every=0", "eval.n=12", "eval.mmd_n=6", "estimator.krr_subsample=8", "eval.directions=16", "reference.floor_draws=1",
        "reference.floor_rows=6", "reference.workers=0", f"reference.cache_dir={json.dumps(str(tmp / 'cache'))}",
        "tracking.backend=\"none\"", *extra])


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("export")
    resolved = tiny_pmf(folder, tmp, "train.ema={decay=0.5}")
    run_recipe(resolved, tmp / "run", progress=False)
    return tmp, resolved


def params_of(generator):
    return {k: v.detach().clone() for k, v in generator.state_dict().items()}


def test_safetensors_export_holds_the_ema_a_config_and_a_card_and_loads_back_exactly(trained, tmp_path):
    tmp, resolved = trained
    files = export_checkpoint(tmp / "run", "safetensors", tmp_path / "e")
    assert {p.name for p in files} == {"model.safetensors", "config.json", "README.md", "rdmx_export.json"}
    from rdmx.checkpoints import load_generator
    from rdmx.files import load_tensors

    comp, _ = load_generator(resolved, tmp / "run")  # auto: the EMA
    assert comp.weights == "ema"
    state, meta = load_tensors(tmp_path / "e" / "model.safetensors")
    want = params_of(comp.generator)
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["weights"] == "ema" and config["step"] == 2 and config["fingerprint"] == resolved.fingerprint
    assert config["generator"]["name"] == "pmf-h" and config["generator"]["config"]["tiny"] is True
    card = (tmp_path / "e" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: rdmx\n") and "held-out encoders (1): `held` (toy-conv)" in card
    assert "| sw_rK_heldout |" in card and "weights in this export: **ema**" in card
    # round trip: the recipe's generator.weights pointing at the export builds exactly these weights
    from rdmx.recipe import with_overrides
    from rdmx.train.build import build_generator

    again = build_generator(with_overrides(resolved, [f"generator.weights={json.dumps(str(tmp_path / 'e'))}"]),
                            torch.device("cpu"))
    got = params_of(again)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_release_layout_for_pmf_and_the_release_files_read_by_eval(trained, tmp_path):
    tmp, resolved = trained
    export_checkpoint(tmp / "run", "release", tmp_path / "r", weights="raw")
    obj = torch.load(tmp_path / "r" / "model.pth", weights_only=True)
    assert set(obj) == {"model", "step"} and obj["step"] == 2
    assert all(k.startswith("net.") for k in obj["model"]) and "net.h_embedder.mlp.0.linear.weight" in obj["model"]
    # the release writes upstream pMF's flax-style names and (1, n, d) tokens too: rdmx reads both
    upstream = {k.replace(".linear.", "._flax_linear."): v for k, v in obj["model"].items()}
    upstream = {k: (v[None] if k.endswith("_tokens") else v) for k, v in upstream.items()}
    torch.save({"model": upstream, "step": 4000}, tmp_path / "pMF-H_FD-SIM.pth")
    from rdmx.checkpoints import evaluate_checkpoint, load_generator

    for path in (tmp_path / "r" / "model.pth", tmp_path / "pMF-H_FD-SIM.pth"):
        comp, ckpt = load_generator(resolved, path)
        got = params_of(comp.generator)
        assert ckpt.step == 0 and comp.weights == "raw"
        assert all(torch.equal(got[k], obj["model"][k]) for k in obj["model"])
    result = evaluate_checkpoint(resolved, tmp_path / "pMF-H_FD-SIM.pth", n=6, progress=False, log=False)
    assert result.settings["checkpoint"].endswith("pMF-H_FD-SIM.pth") and result.settings["weights"] == "raw"
    # a release file with another layout: every missing and unexpected key in one message
    bad = dict(obj["model"])
    bad.pop("net.h_embedder.mlp.0.linear.weight")
    bad["net.extra.weight"] = torch.zeros(1)
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(RdmxError, match=r"does not fit this network: 1 missing: net.h_embedder.mlp.0.linear.weight; "
                                        r"1 unexpected: net.extra.weight"):
        load_generator(resolved, tmp_path / "bad.pth")


def test_bad_exports_are_one_line_and_write_nothing(trained, tmp_path):
    tmp, _ = trained
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    cases = [
        (["--out", str(tmp_path / "full")], "exists and is not empty"),
        (["--format", "onnx", "--out", str(tmp_path / "x")], "--format 'onnx': generator 'pmf-h' exports safetensors, release"),
        (["--weights", "sideways", "--out", str(tmp_path / "y")], "--weights must be auto, ema or raw"),
    ]
    for extra, message in cases:
        res = rdmx("export", str(tmp / "run"), *extra, cwd=tmp)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep" and not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # a run without EMA: --weights ema is refused
    res = rdmx("export", str(tmp / "run"), "--weights", "raw", "--out", str(tmp_path / "ok"), cwd=tmp)
    assert res.returncode == 0, res.stderr


def test_export_of_a_run_without_ema_refuses_ema(folder, tmp_path):  # noqa: F811
    resolved = tiny_pmf(folder, tmp_path, "train.steps=1")
    run_recipe(resolved, tmp_path / "run", progress=False)
    with pytest.raises(RdmxError, match="holds no EMA"):
        export_checkpoint(tmp_path / "run", "safetensors", tmp_path / "e", weights="ema")
    assert not (tmp_path / "e").exists()
