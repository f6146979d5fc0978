"""Fault isolation with real plugin packages installed (broken on purpose), not mocks of pluggy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, rdmx

FIXTURES = ROOT / "tests" / "plugin_fixtures"


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory):
    """An extra site dir holding three installed plugin distributions that misbehave."""
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(target)]
    cmd += [str(FIXTURES / n) for n in ("rdmx-broken-import", "rdmx-broken-register", "rdmx-clash")]
    subprocess.run(cmd, check=True, capture_output=True, text=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def _plugins(env):
    out = rdmx("plugins", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in json.loads(out.stdout)}


def test_failures_are_reported_and_everything_else_works(broken_env):
    plugins = _plugins(broken_env)
    assert plugins["broken_import"]["status"] == "failed"
    assert "rdmx_this_module_does_not_exist" in plugins["broken_import"]["error"]
    assert plugins["broken_register"]["status"] == "failed"
    assert "exploded on purpose" in plugins["broken_register"]["error"]
    assert plugins["builtin.toys"]["status"] == "ok"
    listed = rdmx("list", "encoders", "--json", env=broken_env)
    assert listed.returncode == 0
    data = json.loads(listed.stdout)
    names = {c["name"] for c in data["components"]}
    assert {"toy-conv", "pixels"} <= names
    assert "half-registered" not in names  # a failing plugin registers nothing at all
    failed = {f["plugin"] for f in data["failed_plugins"]}
    assert {"broken_import", "broken_register", "clash"} <= failed
    text = rdmx("list", "encoders", env=broken_env).stdout
    assert "broken_import" in text and "failed" in text


def test_name_clash_names_both_plugins(broken_env, tmp_path):
    plugins = _plugins(broken_env)
    err = plugins["clash"]["error"]
    assert "example-hog" in err and "rdmx-example" in err and "rdmx-clash" in err
    recipe = tmp_path / "r.toml"
    recipe.write_text((ROOT / "recipes" / "quickstart.toml").read_text().replace('name = "pixels"', 'name = "example-hog"'))
    out = rdmx("show", str(recipe), env=broken_env)
    assert out.returncode == 2
    assert "registered twice" in out.stderr and "rdmx-example" in out.stderr and "rdmx-clash" in out.stderr
    assert "Traceback" not in out.stderr


def test_strict_mode_turns_a_failure_into_an_error(broken_env):
    out = rdmx("list", "encoders", env={**broken_env, "RDMX_STRICT_PLUGINS": "1"})
    assert out.returncode == 2
    assert "broken_import" in out.stderr and "Traceback" not in out.stderr


def test_disable_list_skips_named_plugins(broken_env):
    env = {**broken_env, "RDMX_DISABLE_PLUGINS": "broken_import,rdmx-broken-register,clash"}
    plugins = _plugins(env)
    assert plugins["broken_import"]["status"] == "disabled"
    assert plugins["broken_register"]["status"] == "disabled"
    assert not [p for p in plugins.values() if p["status"] == "failed"]
    out = rdmx("list", "encoders", "example-*", "--json", env=env)
    assert [c["name"] for c in json.loads(out.stdout)["components"]] == ["example-hog"]


def test_requirements_prints_pins():
    out = rdmx("plugins", "--requirements")
    assert out.returncode == 0
    assert "rdmx==" in out.stdout and "rdmx-example==0.1.0" in out.stdout


def test_registry_rejects_bad_registrations():
    from pydantic import BaseModel

    from rdmx.errors import PluginError
    from rdmx.registry import Registry, make_register

    reg, staged = Registry("encoders"), []
    register = make_register(reg, "p", "1", staged)
    with pytest.raises(PluginError, match="pydantic model"):
        register("x", lambda c: c, config=dict)
    with pytest.raises(PluginError, match="factory"):
        register("x", "no_colon_here")
    register("x", "m:f", config=BaseModel)
    assert [e.name for e in staged] == ["x"]
