"""Fault isolation with real plugin packages installed (broken on purpose), not mocks of pluggy."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT, rdmx

# every fixture plugin except these loads in the strict/disable tests below
OTHER_BROKEN = ("ep_package,misspelled_hook,no_hookimpl,registers_nothing,bad_meta,clash_builtin,faulty,"
                "extras")


@pytest.fixture
def broken_env(plugin_site):
    """The fixture plugins installed (tests/conftest.py: plugin_site)."""
    return plugin_site


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
    out = rdmx("list", "encoders", env={**broken_env, "RDMX_STRICT_PLUGINS": "1",
                                        "RDMX_DISABLE_PLUGINS": OTHER_BROKEN})
    assert out.returncode == 2
    assert "broken_import" in out.stderr and "Traceback" not in out.stderr


def test_disable_list_skips_named_plugins(broken_env):
    env = {**broken_env, "RDMX_DISABLE_PLUGINS": "broken_import,rdmx-broken-register,clash," + OTHER_BROKEN}
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
