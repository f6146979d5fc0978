"""Recipe validation: every mistake is one clear message naming the recipe path."""

from __future__ import annotations

import json

import pytest

from rdmx.errors import RecipeError
from rdmx.recipe import load_recipe, parse_value, set_path, sweep_cells, validate_recipe
from tests.helpers import ROOT, rdmx

QUICK = ROOT / "recipes" / "quickstart.toml"


def write(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


def base_text():
    return QUICK.read_text()


def test_quickstart_resolves_with_component_defaults():
    r = load_recipe(QUICK)
    d = r.to_dict()
    assert d["battery"]["encoders"][0]["width"] == 32  # default filled in by the plugin's model
    assert d["battery"]["encoders"][1]["width"] == 16
    assert d["data"]["image_size"] == 32
    assert len(r.fingerprint) == 16


def test_fingerprint_tracks_results_not_tracking():
    a = load_recipe(QUICK)
    assert load_recipe(QUICK, ["tracking.backend=none"]).fingerprint == a.fingerprint
    assert load_recipe(QUICK, ["train.lr=0.01"]).fingerprint != a.fingerprint
    assert load_recipe(QUICK, ["battery.encoders[0].seed=9"]).fingerprint != a.fingerprint


def test_set_coerces_types_and_reaches_list_items():
    r = load_recipe(QUICK, ["train.steps=7", "battery.encoders[2].resolution=8", "train.betas=[0.8, 0.99]"])
    assert r.recipe.train.steps == 7
    assert r.config("battery.encoders[2]").resolution == 8
    assert r.recipe.train.betas == (0.8, 0.99)
    assert parse_value("true") is True and parse_value("abc") == "abc" and parse_value("1e-3") == 1e-3


@pytest.mark.parametrize(
    "override, expected",
    [
        ("battery.encoders[2].name=pixel", ["battery.encoders[2].name", "pixel", "did you mean: pixels"]),
        ("battery.encoders[0].widht=3", ["battery.encoders[0].widht", "unknown key", "did you mean: width"]),
        ("train.stesp=3", ["train.stesp", "unknown key", "did you mean: steps"]),
        ("train.steps=lots", ["train.steps", "'lots'"]),
        ("battery.encoders[0].pooling=median", ["battery.encoders[0].pooling", "'median'"]),
        ("train.micro_batch=100", ["micro_batch", "multiple"]),
    ],
)
def test_bad_values_name_the_path_and_close_matches(override, expected):
    with pytest.raises(RecipeError) as exc:
        load_recipe(QUICK, [override])
    for part in expected:
        assert part in str(exc.value), (part, str(exc.value))
    assert str(QUICK) in str(exc.value)


def test_invalid_toml_names_file_and_line(tmp_path):
    p = write(tmp_path, "name = 'x'\n[train\nsteps = 1\n")
    with pytest.raises(RecipeError, match=r"r\.toml: invalid TOML.*line 2"):
        load_recipe(p)


def test_missing_file_and_missing_blocks(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(RecipeError, match="generator: Field required"):
        validate_recipe({"data": {"name": "digits"}, "battery": {"encoders": [{"name": "pixels"}]}}, "x.toml")


def test_battery_rules():
    raw = {"data": {"name": "digits"}, "generator": {"name": "conv"},
           "battery": {"encoders": [{"name": "pixels", "role": "heldout"}]}}
    with pytest.raises(RecipeError, match="at least one encoder with role = 'train'"):
        validate_recipe(raw)
    raw["battery"]["encoders"] = [{"name": "pixels"}, {"name": "pixels"}]
    with pytest.raises(RecipeError, match="repeats the label 'pixels'"):
        validate_recipe(raw)


def test_set_path_errors():
    d = {"a": [1]}
    with pytest.raises(RecipeError, match="out of range"):
        set_path(d, "a[3]", 1)
    set_path(d, "b.c", 2)
    assert d["b"] == {"c": 2}


def test_sweep_cells_are_the_grid():
    r = load_recipe(QUICK, ["sweep={\"train.lr\" = [0.1, 0.2], \"train.batch\" = [128, 256]}"])
    cells = sweep_cells(r)
    assert len(cells) == 4
    assert {(v["train.lr"], v["train.batch"]) for v, _ in cells} == {(0.1, 128), (0.1, 256), (0.2, 128), (0.2, 256)}
    assert all(c.recipe.train.lr == v["train.lr"] for v, c in cells)
    assert len({c.fingerprint for _, c in cells}) == 4


def test_sweep_key_with_several_paths_ties_them():
    grid = 'sweep={"train.batch, train.lr" = [[128, 0.1], [256, 0.2]], "train.steps" = [3, 4]}'
    cells = sweep_cells(load_recipe(QUICK, [grid]))
    got = sorted((c.recipe.train.batch, c.recipe.train.lr, c.recipe.train.steps) for _, c in cells)
    assert got == [(128, 0.1, 3), (128, 0.1, 4), (256, 0.2, 3), (256, 0.2, 4)]
    assert all(set(v) == {"train.batch", "train.lr", "train.steps"} for v, _ in cells)
    with pytest.raises(RecipeError, match=r'sweep."train.batch, train.lr": ties 2 paths.*got \[128\]'):
        load_recipe(QUICK, ['sweep={"train.batch, train.lr" = [[128], [256, 0.2]]}'])


def test_cli_show_and_errors_without_traceback(tmp_path):
    out = rdmx("show", str(QUICK), "--set", "train.steps=5")
    assert out.returncode == 0, out.stderr
    assert "# fingerprint:" in out.stdout and "steps = 5" in out.stdout
    js = json.loads(rdmx("show", str(QUICK), "--json").stdout)
    assert js["fingerprint"] == load_recipe(QUICK).fingerprint
    bad = rdmx("show", str(QUICK), "--set", "battery.encoders[0].name=toy-cnv")
    assert bad.returncode == 2
    assert "battery.encoders[0].name" in bad.stderr and "toy-conv" in bad.stderr
    assert "Traceback" not in bad.stderr
    debug = rdmx("--debug", "show", str(QUICK), "--set", "battery.encoders[0].name=toy-cnv")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert rdmx("list", "encoderz").returncode == 2
