"""`rdmx eval` and `rdmx sample` on a checkpoint, and a sweep with its figure (smoke sizes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, rdmx
from tests.test_engine import TINY

QUICK = ROOT / "recipes" / "quickstart.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    sets = [*TINY, "train.steps=2", f"reference.cache_dir={json.dumps(str(tmp / 'cache'))}", "tracking.backend=none"]
    args = sum((["--set", s] for s in sets), [])
    res = rdmx("run", str(QUICK), *args, "--out", str(tmp / "run"), "--no-progress", cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp, args


def test_eval_reports_train_and_heldout_means(trained):
    tmp, args = trained
    res = rdmx("eval", str(QUICK), *args, "-c", str(tmp / "run/checkpoints/step-000002"), "--n", "64",
               "--out", str(tmp / "ev"), "--no-progress", cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads((tmp / "ev" / "eval.json").read_text())
    enc = ev["encoders"]
    assert set(enc) == {"conv-a", "conv-b", "pixels", "heldout-conv-c", "heldout-conv-d"}
    held = [enc[k]["sw_r"] for k in ("heldout-conv-c", "heldout-conv-d")]
    assert ev["summary"]["sw_rK_heldout"] == pytest.approx(sum(held) / 2)
    assert ev["summary"]["sw_rK"] == pytest.approx(sum(v["sw_r"] for v in enc.values()) / 5)
    assert all("fd" in v and "mmd_r" in v for v in enc.values())
    assert ev["settings"]["step"] == 2
    assert "sw_r" in res.stdout and "heldout" in res.stdout


def test_sample_writes_npz_and_labelled_grids(trained):
    tmp, args = trained
    res = rdmx("sample", str(QUICK), *args, "-c", str(tmp / "run"), "--n", "70",
               "--out", str(tmp / "s"), cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    z = np.load(tmp / "s" / "samples.npz")
    assert z["arr_0"].shape == (70, 16, 16, 3) and z["arr_0"].dtype == np.uint8
    assert z["arr_1"].tolist()[:16] == [0] * 8 + [1] * 8  # one class per grid row
    assert Image.open(tmp / "s" / "grid-0000.png").size[0] > 8 * 16
    assert (tmp / "s" / "grid-0001.png").is_file()


def test_wrong_checkpoint_is_a_clear_error(trained, tmp_path):
    tmp, args = trained
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    res = rdmx("sample", str(QUICK), *args, "-c", str(bad), cwd=tmp)
    assert res.returncode == 2 and "neither an rdmx checkpoint nor a weights file generator 'conv' can read" in res.stderr
    res = rdmx("eval", str(QUICK), *args, "--set", "train.lr=0.5", "-c", str(tmp / "run/checkpoints"), cwd=tmp)
    assert res.returncode == 2 and "fingerprint" in res.stderr and "Traceback" not in res.stderr
    assert str(tmp / "run" / "recipe.resolved.toml") in res.stderr  # the recipe that made it


def test_spiral_sweep_smoke_writes_cells_figure_and_table(tmp_path):
    sweep = ('sweep={"train.batch" = [8, 32], estimator = [{name = "mmd-nystrom", landmarks = 64, kmeans_iters = 0, '
             'scales = [0.2, 0.8]}, {name = "sw", projections = 50, bank = 500}]}')
    res = rdmx("run", str(ROOT / "recipes/spiral_fig3.toml"), "--set", "train.steps=20", "--set", sweep,
               "--set", "eval.n=500", "--set", "tracking.backend=tensorboard", "--set",
               f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}", "--out", str(tmp_path / "sw"),
               "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    assert len(summary["cells"]) == 4
    values = {(c["values"]["train.batch"], c["values"]["estimator"]["name"]) for c in summary["cells"]}
    assert values == {(8, "mmd-nystrom"), (8, "sw"), (32, "mmd-nystrom"), (32, "sw")}
    for c in summary["cells"]:
        assert 0.0 <= c["final"]["eval/spiral/recall"] <= 1.0 and c["final"]["eval/spiral/med_dist"] > 0
    assert (tmp_path / "sw" / "figure.png").is_file()
    table = (tmp_path / "sw" / "table.md").read_text()
    assert "mmd-nystrom" in table and "| 32 |" in table
    assert "rdmx (paper)" in table and "(0.98 / 0.158)" in table and "(1.00 / 0.054)" in table  # paper beside rdmx
    # TensorBoard: the sweep's own run (its figure) in the sweep's folder, each cell's in the cell's
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    parent = EventAccumulator(str(tmp_path / "sw" / "tensorboard"))
    parent.Reload()
    assert "figure" in parent.Tags()["images"]
    for i in range(4):
        cell = EventAccumulator(str(tmp_path / "sw" / f"cell-{i:03d}" / "tensorboard"))
        cell.Reload()
        assert "loss" in cell.Tags()["scalars"]


def test_eval_json_records_its_protocol_and_compare_refuses_a_different_one(trained):
    from rdmx.checkpoints import evaluate_checkpoint
    from rdmx.recipe import load_recipe
    from rdmx.train.build import build_components

    tmp, args = trained
    sets = args[1::2]
    ckpt = tmp / "run/checkpoints/step-000002"

    def evaluate(out, n=64, *more):
        evaluate_checkpoint(load_recipe(QUICK, sets), ckpt if out != "base" else None, n=n, out=tmp / f"p-{out}",
                            log=False, progress=False, eval_set=list(more))
        return tmp / f"p-{out}" / "eval.json"

    a, base = evaluate("a"), evaluate("base")
    proto = json.loads(a.read_text())["settings"]["protocol"]
    comp = build_components(load_recipe(QUICK, sets))
    assert proto["n"] == 64 and proto["mmd_n"] == 64 and proto["seed"] == 0 and proto["quantize"] == "none"
    assert {k: v["fingerprint"] for k, v in proto["encoders"].items()} == \
        {k: e.spec.fingerprint() for k, e in comp.encoders.items()}
    assert proto["encoders"]["conv-a"]["resize"] == f"{comp.encoders['conv-a'].spec.resize} antialias" and proto["encoders"]["conv-a"]["role"] == "train"
    assert proto["data"]["fingerprint"] == comp.data.fingerprint() and proto["reference_rows"] == "random"
    fp = comp.encoders["conv-a"].spec.fingerprint()
    assert [b.split("-")[0] for b in proto["encoders"]["conv-a"]["banks"]] == [fp, fp]  # train and val
    assert proto["versions"]["torch"] == __import__("importlib.metadata").metadata.version("torch")
    # same protocol: side by side, the numbers as each file holds them
    res = rdmx("compare-evals", str(a), str(base), "--json", cwd=tmp)
    assert res.returncode == 0, res.stderr
    rows = {r["metric"]: (r["a"], r["b"]) for r in json.loads(res.stdout)["rows"]}
    ea, eb = json.loads(a.read_text()), json.loads(base.read_text())
    assert rows["sw_rK"] == (ea["summary"]["sw_rK"], eb["summary"]["sw_rK"])
    assert rows["fd/pixels"] == (ea["encoders"]["pixels"]["fd"], eb["encoders"]["pixels"]["fd"])
    # a different sample count, or uint8 samples: refused in one line naming the field
    for other, field in ((evaluate("n48", 48), "n = 64 vs 48"),
                         (evaluate("q", 64, "eval.quantize=uint8"), 'quantize = "none" vs "uint8"')):
        res = rdmx("compare-evals", str(a), str(other), cwd=tmp)
        assert res.returncode != 0 and field in res.stderr and "not comparable" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    assert json.loads((tmp / "p-q" / "eval.json").read_text())["summary"]["sw_rK"] != ea["summary"]["sw_rK"]
