"""Values that used to validate and then crash late are refused by `rdmx show` (one line each,
the field named); the run folder stays inside runs/; the fingerprint covers exactly what changes
results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rdmx.errors import RdmxError, RecipeError
from rdmx.recipe import load_recipe
from rdmx.recipe_checks import memory_needs
from rdmx.run import default_out_dir
from tests.helpers import ROOT, rdmx

QUICK = ROOT / "recipes" / "quickstart.toml"
SPIRAL = ROOT / "recipes" / "spiral_fig3.toml"


@pytest.mark.parametrize(("override", "message"), [
    ("train.lr=inf", "train.lr: Input should be a finite number"),
    ("train.lr=nan", "train.lr: Input should be a finite number"),
    ("joint.class_scale=inf", "joint.class_scale: Input should be a finite number"),
    ("estimator.sigma_scale=inf", "estimator.sigma_scale: Input should be a finite number"),
    ("train.betas=[1.5, -0.2]", "train.betas: Value error, Adam betas must each lie in [0, 1)"),
    ("train.betas=[0.9, 1.0]", "Adam betas must each lie in [0, 1)"),
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    ("seed=1180591620717411303424", "seed: Input should be less than or equal to 9223372036854775807"),
    ("eval.seed=-3", "eval.seed: Input should be greater than or equal to 0"),
    ("battery.encoders[0].seed=-1", "battery.encoders[0].seed: Input should be greater than or equal to 0"),
    ("data.image_size=100000", "data.image_size: Input should be less than or equal to 1024"),
    ("train.batch=1000000000", "train.batch: needs at least"),
    ("eval.n=1000000000", "eval.n: needs at least"),
    ("train.steps=\"64\"", "train.steps: Input should be a valid integer"),
    ("train.steps=8.0", "train.steps: Input should be a valid integer"),
    ("battery.encoders[0].width=true", "battery.encoders[0].width: Input should be a valid integer"),
])
def test_values_that_cannot_work_are_refused(override, message):
    with pytest.raises(RecipeError) as exc:
        load_recipe(QUICK, [override])
    assert message in str(exc.value), str(exc.value)


def test_show_refuses_them_in_one_line_without_a_traceback():
    for override in ("train.lr=inf", "seed=-1", "train.batch=1000000000", "name=\"../../escaped\""):
        out = rdmx("show", str(QUICK), "--set", override)
        assert out.returncode == 2 and "Traceback" not in out.stderr, override
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_memory_check_counts_what_rdmx_holds(monkeypatch):
    r = load_recipe(QUICK)
    needs = {f: b for f, b, _ in memory_needs(r, __import__("rdmx.plugins", fromlist=["x"]).get_plugins())}
    # quickstart: N = 256, training dims 128 + 128 + 256 (features + their gradients, float32)
    assert needs["train.batch"] == 256 * 512 * 2 * 4
    # eval.n = 360 samples: 3 × (128 + 128 + 256 + 128 + 96) feature values each (the samples are
    # streamed: no metric plugin reads them); with a metric plugin the 1×32×32 samples are held too
    assert needs["eval.n"] == 360 * 3 * 736 * 4
    r_metric = load_recipe(QUICK, ['eval.metrics=[{ name = "fd" }]'])
    needs_metric = {f: b for f, b, _ in memory_needs(r_metric, __import__("rdmx.plugins", fromlist=["x"]).get_plugins())}
    assert needs_metric["eval.n"] == 360 * (32 * 32 + 3 * 736) * 4
    assert needs["train.micro_batch"] == 64 * 32 * 32 * 4
    monkeypatch.setenv("RDMX_MEMORY_BYTES", str(needs["eval.n"] - 1))
    with pytest.raises(RecipeError, match=r"eval\.n: needs at least .* more than this machine's"):
        load_recipe(QUICK)


def test_recipe_name_cannot_leave_runs():
    for bad in ("../../escaped", "/tmp/abs", "a/b", "..", ""):
        with pytest.raises(RecipeError, match="name: String should match pattern"):
            load_recipe(QUICK, [f"name={json.dumps(bad)}"])
    r = load_recipe(QUICK, ["name=\"my.run_2-x\""])
    out = default_out_dir(r)
    assert out.parent.name == "runs" and out.name.startswith("my.run_2-x-")


def test_class_joint_needs_classes():
    with pytest.raises(RecipeError, match=r"joint\.kind: 'class' .* data 'spiral' has no classes"):
        load_recipe(SPIRAL, ["joint.kind=class"])


def _folder(root, nested: bool, val: int):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", val)):
        d = root / split / ("a" if nested else "")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")


def _folder_recipe(root, *extra):
    return load_recipe(QUICK, [
        "data={ name = \"image-folder\", path = " + json.dumps(str(root / "train")) + ", val_path = "
        + json.dumps(str(root / "val")) + ", size = 8 }", "battery.encoders[2].resolution=8", *RGB, *extra])


RGB = [f"battery.encoders[{i}].channels=3" for i in range(5)]  # the folder's images are RGB


def test_class_joint_on_a_flat_folder_names_joint_kind(tmp_path):
    from rdmx.train.build import build_components

    _folder(tmp_path, nested=False, val=3)
    with pytest.raises(RdmxError, match=r"joint\.kind = 'class' matches images with their class labels, but "
                                        r"data 'image-folder' has no classes"):
        build_components(_folder_recipe(tmp_path))


def test_empty_val_split_is_found_before_any_extraction(tmp_path):
    """6 images, val_fraction 0.02: no validation rows. Found when the data is opened, naming the fields."""
    from rdmx.train.build import build_components

    _folder(tmp_path, nested=True, val=0)
    r = load_recipe(QUICK, [
        "data={ name = \"image-folder\", path = " + json.dumps(str(tmp_path / "train")) + ", size = 8 }",
        "battery.encoders[2].resolution=8", *RGB, "reference.cache_dir=" + json.dumps(str(tmp_path / "cache"))])
    with pytest.raises(RdmxError) as exc:
        build_components(r)
    msg = str(exc.value)
    assert "the val split is empty" in msg and "val_fraction = 0.02" in msg and "val_path" in msg, msg
    assert not (tmp_path / "cache").exists()


def test_messages_do_not_dump_whole_tables():
    with pytest.raises(RecipeError) as exc:
        load_recipe(QUICK, ["battery.encoders[1].label=\"conv-a\""])
    msg = str(exc.value)
    assert "repeats the label 'conv-a'" in msg and "'toy-conv'" not in msg and len(msg) < 300, msg


def test_fingerprint_covers_exactly_what_changes_results():
    base = load_recipe(QUICK).fingerprint
    for same in ("train.checkpoint_every=7", "train.log_every=5", "train.sample_every=3",
                 "train.max_consecutive_skips=2", "reference.workers=4", "reference.cache_dir=\"./.rdmx-cache\"",
                 "reference.cache_dir=\".rdmx-cache/\"", "tracking.backend=none", "tracking.run_name=\"x\"",
                 "train.steps=10"):  # the quickstart's learning rate is constant: its steps do not depend on the length
        assert load_recipe(QUICK, [same]).fingerprint == base, same
    for different in ("train.lr=0.01", "reference.cache_dir=\"elsewhere\"", "eval.n=100",
                      "reference.floor_rows=100", "seed=1", "train.lr_schedule=\"cosine\""):
        assert load_recipe(QUICK, [different]).fingerprint != base, different
    cosine = load_recipe(QUICK, ["train.lr_schedule=\"cosine\""]).fingerprint
    assert load_recipe(QUICK, ["train.lr_schedule=\"cosine\"", "train.steps=10"]).fingerprint != cosine
