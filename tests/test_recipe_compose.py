"""Recipes that compose: includes, ${ENV} interpolation, `--set` into sweeps, and the resolved
recipe a run saves, fed back to `rdmx run` / `rdmx show`."""

from __future__ import annotations

import json

import pytest

from rdmx.errors import RecipeError
from rdmx.recipe import load_recipe, sweep_cells
from rdmx.recipe_compose import interpolate_env, merge, read_recipe
from rdmx.run import write_resolved_recipe
from tests.helpers import ROOT, rdmx

RECIPES = ROOT / "recipes"
QUICK = RECIPES / "quickstart.toml"


def test_merge_tables_recursively_and_replace_everything_else():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": [{"n": 1}], "c": 1}
    top = {"a": {"y": [3]}, "b": [{"n": 2}, {"n": 3}]}
    assert merge(base, top) == {"a": {"x": 1, "y": [3]}, "b": [{"n": 2}, {"n": 3}], "c": 1}
    assert base["a"]["y"] == [1, 2]  # inputs untouched


def test_include_is_merged_before_the_recipes_own_tables(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "battery.toml").write_text(
        'include = ["train.toml"]\n[[battery.encoders]]\nname = "pixels"\n[train]\nsteps = 9\nlr = 0.5\n')
    (tmp_path / "parts" / "train.toml").write_text("[train]\nsteps = 1\nbatch = 64\n")
    (tmp_path / "r.toml").write_text('include = ["parts/battery.toml"]\n[data]\nname = "digits"\n'
                                     '[generator]\nname = "conv"\n[train]\nlr = 0.25\n')
    r = load_recipe(tmp_path / "r.toml")
    assert [e.name for e in r.recipe.battery.encoders] == ["pixels"]
    # train.toml < battery.toml < the recipe: steps from battery.toml, batch from train.toml, lr own
    assert (r.recipe.train.steps, r.recipe.train.batch, r.recipe.train.lr) == (9, 64, 0.25)
    assert "include" not in r.to_dict()


def test_a_recipes_own_battery_replaces_an_included_one(tmp_path):
    (tmp_path / "r.toml").write_text('include = ["' + str(RECIPES / "batteries" / "panel.toml") + '"]\n'
                                     '[data]\nname = "digits"\n[generator]\nname = "conv"\n'
                                     '[[battery.encoders]]\nname = "pixels"\n')
    assert [e.name for e in load_recipe(tmp_path / "r.toml").recipe.battery.encoders] == ["pixels"]


def test_include_errors(tmp_path):
    (tmp_path / "a.toml").write_text('include = ["b.toml"]\n')
    (tmp_path / "b.toml").write_text('include = ["a.toml"]\n')
    with pytest.raises(RecipeError, match="makes a cycle"):
        read_recipe(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('include = ["nope.toml"]\n')
    with pytest.raises(RecipeError, match=r"c\.toml: include 'nope\.toml': no such file"):
        read_recipe(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text("include = 3\n")
    with pytest.raises(RecipeError, match="expected a list of file paths"):
        read_recipe(tmp_path / "d.toml")


def test_panel_recipe_is_the_panel_battery_plus_its_own_settings():
    """Moving the battery into recipes/batteries/panel.toml changed nothing the recipe says."""
    r = load_recipe(RECIPES / "irdm_panel.toml")
    assert len(r.recipe.battery.encoders) == 14
    radio = next(i for i, e in enumerate(r.recipe.battery.encoders) if e.name == "radio")
    assert r.config(f"battery.encoders[{radio}]").trust_remote_code is True
    assert r.config("data").path == "data/imagenet/train"  # ${IMAGENET_DIR:-data/imagenet} unset


def test_env_interpolation():
    env = {"ROOT": "/data/in", "EMPTY": ""}
    raw = {"data": {"path": "${ROOT}/train", "val": "${MISSING:-/fallback}/val", "lit": "$${ROOT}"},
           "list": ["${ROOT}", 3]}
    out = interpolate_env(raw, "r.toml", env)
    assert out == {"data": {"path": "/data/in/train", "val": "/fallback/val", "lit": "${ROOT}"},
                   "list": ["/data/in", 3]}
    with pytest.raises(RecipeError, match=r"r\.toml: list\[0\]: environment variable NOPE is not set"):
        interpolate_env({"list": ["${NOPE}"]}, "r.toml", env)
    with pytest.raises(RecipeError, match="EMPTY is not set"):
        interpolate_env({"p": "${EMPTY}"}, "r.toml", env)


def test_env_in_a_recipe_and_in_set_values(tmp_path, monkeypatch):
    monkeypatch.setenv("RDMX_TEST_CACHE", str(tmp_path / "c"))
    r = load_recipe(QUICK, ["reference.cache_dir=${RDMX_TEST_CACHE}/x"])
    assert r.recipe.reference.cache_dir == str(tmp_path / "c" / "x")
    monkeypatch.delenv("RDMX_TEST_CACHE")
    out = rdmx("show", str(QUICK), "--set", "reference.cache_dir=${RDMX_TEST_CACHE}/x")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "reference.cache_dir: environment variable RDMX_TEST_CACHE is not set" in out.stderr


def test_set_reaches_sweep_tables():
    r = load_recipe(QUICK, ["sweep.train.lr=[0.1, 0.2]", "sweep.battery.encoders[0].seed=[3, 4]"])
    assert r.recipe.sweep == {"train.lr": [0.1, 0.2], "battery.encoders[0].seed": [3, 4]}
    cells = sweep_cells(r)
    assert sorted((c.recipe.train.lr, c.config("battery.encoders[0]").seed) for _, c in cells) == [
        (0.1, 3), (0.1, 4), (0.2, 3), (0.2, 4)]
    spiral = load_recipe(RECIPES / "spiral_fig3.toml", ["sweep.train.batch=[16]"])
    assert spiral.recipe.sweep["train.batch"] == [16] and len(spiral.recipe.sweep["estimator"]) == 6


def test_set_text_for_string_fields():
    """A number typed where a string belongs is the text the user wrote, not a type error."""
    r = load_recipe(QUICK, ["tracking.run_name=2024", "tracking.experiment=42"])
    assert r.recipe.tracking.run_name == "2024" and r.config("tracking").experiment == "42"
    with pytest.raises(RecipeError, match="valid integer"):
        load_recipe(QUICK, ['train.steps="64"'])  # the reverse is never coerced


@pytest.mark.parametrize("name", ["quickstart", "spiral_fig3", "irdm_panel"])
def test_resolved_recipe_round_trips(tmp_path, name):
    r = load_recipe(RECIPES / f"{name}.toml")
    path = write_resolved_recipe(r, tmp_path / "recipe.resolved.toml")
    again = load_recipe(path)
    assert again.fingerprint == r.fingerprint
    assert again.to_dict() == r.to_dict()


def test_run_accepts_the_resolved_recipe_it_saved(tmp_path):
    from tests.test_engine import TINY

    sets = sum((["--set", s] for s in [*TINY, "train.steps=1", "tracking.backend=none",
                                      f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]), [])
    first = rdmx("run", str(QUICK), *sets, "--out", str(tmp_path / "a"), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    saved = tmp_path / "a" / "recipe.resolved.toml"
    again = rdmx("run", str(saved), "--out", str(tmp_path / "b"), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["fingerprint"] == b["fingerprint"] and a["final"] == b["final"]
