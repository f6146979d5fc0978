"""The wandb tracker, offline with no network, read back from wandb's own transaction log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rdmx.recipe import load_recipe
from rdmx.run import run_recipe
from rdmx_wandb.offline import read_offline_run

pytest.importorskip("wandb")
QUICK = Path(__file__).resolve().parents[3] / "recipes" / "quickstart.toml"
TINY = ["train.steps=3", "train.batch=48", "train.micro_batch=16", "eval.n=64", "eval.directions=32",
        "estimator.landmarks=32", "data.image_size=16", "battery.encoders[0].resolution=16",
        "battery.encoders[1].resolution=16", "battery.encoders[3].resolution=16",
        "battery.encoders[4].resolution=16", "battery.encoders[2].resolution=8", "train.sample_every=2",
        "eval.every=2", "reference.floor_rows=64"]


def recipe(tmp_path, *sets):
    return load_recipe(QUICK, [*TINY, f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
                               "tracking.backend=wandb", "tracking.mode=offline", "tracking.system_metrics=false",
                               *sets])


def test_offline_run_holds_config_metrics_images_files_and_summary(tmp_path):
    out = tmp_path / "o"
    r = recipe(tmp_path, f"tracking.dir={json.dumps(str(tmp_path / 'wb'))}", "tracking.project=rdmx-test")
    summary = run_recipe(r, out, progress=False)
    [folder] = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    run = read_offline_run(folder)
    assert run.run_id == summary["run_id"] and run.exit_code == 0
    assert run.name == f"quickstart-{r.fingerprint[:8]}"
    assert f"fingerprint:{r.fingerprint}" in run.tags
    # the resolved recipe is the run's config
    resolved = r.to_dict()
    assert run.config["train"] == resolved["train"] and run.config["battery"] == resolved["battery"]
    # every (metric, step) of metrics.jsonl, exactly
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "grad_norm", "eval/sw_rK"):
        assert run.metric(key) == {row["step"]: row[key] for row in rows if key in row}
    # the sample grids as images, the recipe and plugin versions as files, the summary
    grids = sorted(p.name for p in (out / "samples").glob("*.png"))
    assert sorted(row["samples/caption"] for row in run.history if "samples/caption" in row) == \
        [f"samples/{Path(g).stem}" for g in grids]
    assert all(row["samples/_type"] == "image-file" for row in run.history if "samples/caption" in row)
    assert {"recipe.resolved.toml", "plugins.json"} <= set(run.files)
    assert (folder / "files" / "recipe.resolved.toml").read_text() == (out / "recipe.resolved.toml").read_text()
    assert run.summary["final_loss"] == summary["final_loss"]
    assert run.summary["final.eval/sw_rK"] == summary["final"]["eval/sw_rK"]


def test_a_wandb_folder_that_cannot_be_written_is_one_line_and_the_run_goes_on(tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    out = tmp_path / "o"
    summary = run_recipe(recipe(tmp_path, f"tracking.dir={json.dumps(str(blocked))}"), out, progress=False)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "tracking" in ln and "wandb" in ln]
    assert len(lines) == 1 and f"cannot write its files in {blocked}" in lines[0], lines
    assert summary["trained"] and summary["run_id"] is None
    assert (out / "metrics.jsonl").is_file()


def test_online_without_a_login_is_one_line_saying_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    r = load_recipe(QUICK, [*TINY, f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}", "train.steps=1",
                            "tracking.backend=wandb", f"tracking.dir={json.dumps(str(tmp_path))}"])
    summary = run_recipe(r, tmp_path / "o", progress=False)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "tracking" in ln]
    assert len(lines) == 1 and "no API key configured; run `wandb login`, or set tracking.mode" in lines[0], lines
    assert summary["trained"]
