"""The paper's ImageNet run (recipes/irdm_imagenet.toml) and its ablations: the protocol's
constants, a dry run that builds every component (tiny models on a synthetic folder), the missing
warm start as a one-line error, the sweeps' cells, and a tiny end-to-end run whose checkpoint
`rdmx sample` and `rdmx eval` read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from rdmx.recipe import load_recipe, sweep_cells
from rdmx.testing import isolate_weight_caches
from tests.helpers import ROOT, rdmx

RECIPES = ROOT / "recipes"
IMAGENET = RECIPES / "irdm_imagenet.toml"
TRAIN = ["inception", "convnext", "mae", "clip", "dinov3", "pe-core", "siglip2", "aimv2", "webssl", "dreamsim"]
HELDOUT = ["dinov2", "siglip", "radio", "flux-vae"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c in ("n01440764", "n01443537"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(root / split / c / f"{i}.png")
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    return root


def data_sets(folder, size=32):
    return [f"data.path={json.dumps(str(folder / 'train'))}", f"data.val_path={json.dumps(str(folder / 'val'))}",
            f"data.size={size}", f"data.class_labels={json.dumps(str(folder / 'LOC_synset_mapping.txt'))}",
            f"data.digest_memo={json.dumps(str(folder / 'memo'))}"]


def args(sets):
    return sum((["--set", s] for s in sets), [])


def test_recipe_carries_the_papers_imagenet_protocol():
    r = load_recipe(IMAGENET)
    rec = r.recipe
    assert [e.name for e in rec.battery.encoders if e.role == "train"] == TRAIN
    assert [e.name for e in rec.battery.encoders if e.role == "heldout"] == HELDOUT
    assert rec.joint.kind == "marginal"  # the release's ImageNet run: joint_enable false
    gen = r.config("generator")
    assert rec.generator.name == "pmf-h" and gen.weights == "pretrained"
    assert (gen.noise_scale, gen.guidance, gen.interval, gen.steps, gen.autocast) == (1.0, 7.0, (0.2, 0.6), 1, "bf16")
    t = rec.train
    assert (t.steps, t.batch, t.lr, t.lr_schedule, t.betas, t.weight_decay, t.grad_clip) == (
        4000, 5120, 1.6e-6, "constant", (0.9, 0.95), 0.0, 2.0)
    # the release's gradient 8/5120 · ∇L (8 per GPU, 1/accumulation, rank mean), on any micro batch / GPU count
    assert t.loss_scale.reference_micro_batch == 8 and t.gradient_scale() == 8 / 5120
    assert t.micro_batch == "auto" and rec.eval.mmd_n == 50_000  # the gradient does not depend on the chunk
    assert t.checkpoint_every == 100
    est = r.config("estimator")
    assert rec.estimator.name == "mmd-nystrom"
    assert (est.landmarks, est.kmeans_iters, est.kmeans_subsample, est.sigma_scale, est.statistic) == (4096, 20, 200_000, 1.0, "v")
    bal = r.config("balancer")
    assert rec.balancer.name == "lagrangian"
    assert (bal.mode, bal.kp, bal.ki, bal.kd, bal.beta, bal.err_clip, bal.temperature, bal.budget, bal.initial) == (
        "softmax", 1.0, 0.0, 0.0, 0.5, 5.0, 2.0, 10.0, 1.0)
    assert (rec.eval.n, rec.eval.directions, rec.eval.suite) == (16384, 1024, ["sw", "mmdr"])
    assert (rec.reference.floor_draws, rec.reference.floor_rows) == (8, 5120)
    assert rec.data.options()["size"] == 256


def test_dry_run_builds_every_component_at_tiny_size(folder):
    tiny = [f"battery.encoders[{i}].weights=\"random\"" for i in range(14)] + [f"battery.encoders[{i}].tiny=true" for i in range(14)]
    # radio's architecture is remote code (not available offline): a tiny DINOv2 takes its place
    radio = 'battery.encoders[12]={name = "dinov2", label = "radio-standin", role = "heldout", weights = "random", tiny = true}'
    res = rdmx("run", str(IMAGENET), "--dry-run", *args([*data_sets(folder), "generator.tiny=true", *tiny, radio]),
               cwd=folder, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "generator pmf-h:" in res.stdout and "parameters" in res.stdout
    for name in [*TRAIN, "dinov2", "siglip", "flux-vae"]:
        assert f"encoder '{name}' (" in res.stdout
    assert "estimator mmd-nystrom, balancer lagrangian" in res.stdout


def test_missing_warm_start_stops_before_training_with_the_fetch_command(folder, tmp_path, monkeypatch):
    env = isolate_weight_caches(tmp_path, monkeypatch)
    res = rdmx("run", str(IMAGENET), "--dry-run", *args(data_sets(folder, size=256)), cwd=folder,
               env={"HF_HOME": str(env / "hf")})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "generator 'pmf-h', plugin rdmx-pmf" in res.stderr and "rdmx weights fetch pmf-h" in res.stderr


@pytest.mark.parametrize("recipe", ["irdm_imagenet_distance", "irdm_imagenet_constrained", "irdm_imagenet_batch"])
def test_ablations_share_the_imagenet_generator(recipe):
    base = load_recipe(IMAGENET).to_dict()
    for _, cell in sweep_cells(load_recipe(RECIPES / f"{recipe}.toml")):
        got = cell.to_dict()
        assert (got["generator"], got["data"], got["joint"]) == (base["generator"], base["data"], base["joint"])
        t = cell.recipe.train
        assert (t.micro_batch, t.loss_scale.reference_micro_batch, t.gradient_scale()) == ("auto", 8, 8 / t.batch)


def test_distance_ablation_has_the_six_estimators_on_dinov2():
    cells = sweep_cells(load_recipe(RECIPES / "irdm_imagenet_distance.toml"))
    got = {c.recipe.estimator.name: c.recipe.train.steps for _, c in cells}
    assert got == {"mmd-nystrom": 100, "mmd-rff": 100, "mmd-exact": 100, "fd": 100, "sw": 100, "drifting": 60}
    for _, c in cells:
        assert [(e.name, e.role) for e in c.recipe.battery.encoders] == [("dinov2", "train")]
        assert c.recipe.balancer.name == "uniform" and c.recipe.train.lr == 1.6e-6 and c.recipe.train.batch == 5120
    by = {c.recipe.estimator.name: c for _, c in cells}
    assert by["sw"].config("estimator").projections == 128
    assert by["drifting"].config("estimator").temperatures == [0.02, 0.05, 0.2]
    assert by["mmd-exact"].config("estimator").real_term == "reference"  # the release's constant k_rr
    assert all(c.recipe.reference.rows == "first" for _, c in cells)


def test_constrained_ablation_compares_gated_and_uniform_at_the_same_budget():
    cells = sweep_cells(load_recipe(RECIPES / "irdm_imagenet_constrained.toml"))
    assert [c.recipe.balancer.name for _, c in cells] == ["lagrangian", "uniform"]
    gated, uniform = (c for _, c in cells)
    n_train = sum(e.role == "train" for e in uniform.recipe.battery.encoders)
    assert n_train == 10 and gated.config("balancer").budget == uniform.config("balancer").weight * n_train == 10.0
    assert all(c.recipe.train.steps == 100 for _, c in cells)


def test_batch_study_ties_lr_to_sqrt_n_and_matches_the_sample_budget():
    cells = sweep_cells(load_recipe(RECIPES / "irdm_imagenet_batch.toml"))
    ns = [c.recipe.train.batch for _, c in cells]
    assert ns == [512, 1280, 2560, 5120, 10240]
    for _, c in cells:
        t = c.recipe.train
        assert t.lr == pytest.approx(1.6e-6 * math.sqrt(t.batch / 5120), rel=2e-4)
        assert t.batch * t.steps == 5120 * 1000  # the upper bound
        assert t.max_seconds == 6000  # the release's equal wall-clock per arm
        assert t.micro_batch == "auto" or t.batch % t.micro_batch == 0
    assert [e.name for e in cells[0][1].recipe.battery.encoders] == ["dinov2"]


def test_tiny_run_then_sample_and_eval_its_checkpoint(folder, tmp_path):
    battery = ('battery={encoders = [{name = "toy-conv", label = "conv-a", channels = 3, seed = 1}, '
               '{name = "toy-conv", label = "held", role = "heldout", channels = 3, seed = 2}]}')
    sets = [*data_sets(folder), "generator.tiny=true", "generator.zero_init=false", battery,
            "estimator.landmarks=8", "estimator.kmeans_iters=2", "train.steps=2", "train.batch=8", "train.micro_batch=4",
            "train.sample_every=0", "eval.n=12", "eval.mmd_n=6", "estimator.krr_subsample=8", "eval.directions=16", "reference.floor_draws=1", "reference.floor_rows=6",
            "reference.workers=0", f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}", "tracking.backend=\"none\""]
    run = rdmx("run", str(IMAGENET), *args(sets), "--out", str(tmp_path / "run"), "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert {"eval/sw_rK", "eval/mmd_r"} <= set(summary["final"])
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    sample = rdmx("sample", str(IMAGENET), *args(sets), "-c", str(ckpt), "--n", "20", "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr[-3000:]
    z = np.load(tmp_path / "s" / "samples.npz")
    assert z["arr_0"].shape == (20, 32, 32, 3) and z["arr_0"].dtype == np.uint8
    assert np.bincount(z["arr_1"]).tolist() == [10, 10]  # balanced classes
    assert (tmp_path / "s" / "grid-0000.png").is_file()
    ev = rdmx("eval", str(IMAGENET), *args(sets), "-c", str(ckpt), "--out", str(tmp_path / "ev"),
              "--no-progress", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(result["encoders"]) == {"conv-a", "held"} and result["settings"]["step"] == 2
    assert result["settings"]["mmd_real_rows"] == "first" and result["settings"]["mmd_rows"] == 6  # the release's rows
    # no checkpoint: the recipe's own generator (the warm start), the same numbers as the run's step 0
    ev0 = rdmx("eval", str(IMAGENET), *args(sets), "--out", str(tmp_path / "ev0"), "--no-progress", cwd=tmp_path)
    assert ev0.returncode == 0, ev0.stderr[-3000:]
    base = json.loads((tmp_path / "ev0" / "eval.json").read_text())
    assert base["settings"]["step"] == 0
    assert base["summary"]["sw_rK"] == pytest.approx(summary["initial"]["eval/sw_rK"], rel=1e-5)


def test_a_checkpoint_replaces_the_warm_start_without_reading_it():
    from rdmx.checkpoints import without_warm_start

    r = load_recipe(IMAGENET)
    swapped = without_warm_start(r)
    assert swapped.config("generator").weights == "random" and r.config("generator").weights == "pretrained"
    rest = {k: v for k, v in swapped.config("generator").model_dump().items() if k != "weights"}
    assert rest == {k: v for k, v in r.config("generator").model_dump().items() if k != "weights"}
    assert swapped.config("battery.encoders[0]") is r.config("battery.encoders[0]")
