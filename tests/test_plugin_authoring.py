"""Plugin authors' mistakes caught at load time: a config field the recipe's own block uses, a
plugin made for another rdmx version, a heavy import that slows every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import rdmx

PLUGIN = '''
import time
from pydantic import Field
from rdmx import hookimpl
from rdmx.registry import ComponentConfig
{extra}

class Cfg(ComponentConfig):
    {field}: int = Field(1)


@hookimpl
def rdmx_register_encoders(register):
    register("{name}-enc", "{module}.plugin:nothing", config=Cfg, dim=4, resolution=8)
'''


def _dist(root, name: str, *, requires: str = "", field: str = "width", extra: str = "") -> None:
    module = name.replace("-", "_")
    (root / name / module).mkdir(parents=True)
    (root / name / module / "__init__.py").write_text("")
    (root / name / module / "plugin.py").write_text(PLUGIN.format(name=name, module=module, field=field, extra=extra))
    deps = f"dependencies = [{json.dumps(requires)}]" if requires else ""
    (root / name / "pyproject.toml").write_text(f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.0.1"
{deps}

[project.entry-points.rdmx]
{module} = "{module}.plugin"

[tool.setuptools]
packages = ["{module}"]
''')


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    src, target = tmp_path_factory.mktemp("authoring-src"), tmp_path_factory.mktemp("authoring-site")
    _dist(src, "rdmx-needs-newer", requires="rdmx>=99")
    _dist(src, "rdmx-reserved-field", field="label")
    _dist(src, "rdmx-slow-import", extra="time.sleep(1.3)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), *[str(src / d) for d in sorted(os.listdir(src))]],
                   check=True, capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def test_load_time_mistakes_are_named(site):
    out = rdmx("plugins", "--json", env=site)
    assert out.returncode == 0, out.stderr
    report = {p["name"]: p for p in json.loads(out.stdout)}
    newer = report["rdmx_needs_newer"]
    assert newer["status"] == "failed" and "requires rdmx>=99, but rdmx 0.1.0 is installed" in newer["error"]
    reserved = report["rdmx_reserved_field"]
    assert reserved["status"] == "failed" and "config field(s) label are reserved" in reserved["error"]
    slow = report["rdmx_slow_import"]
    assert slow["status"] == "ok" and slow["load_s"] > 1.0
    assert all(p["load_s"] < 1.0 for name, p in report.items() if name.startswith("builtin."))
    listed = rdmx("list", env=site)
    assert "warning: plugin 'rdmx_slow_import' (rdmx-slow-import) took" in listed.stderr
    assert "import it inside the factory" in listed.stderr


def test_every_option_is_on_display():
    out = rdmx("list", "encoders", "toy-conv", "--options", "--json")
    assert out.returncode == 0, out.stderr
    (comp,) = json.loads(out.stdout)["components"]
    opts = {o["name"]: o for o in comp["options"]}
    assert opts["pooling"]["type"] == "Literal['mean', 'max']" and opts["pooling"]["default"] == '"mean"'
    assert opts["seed"]["description"].startswith("a random seed")
    table = rdmx("list", "encoders", "toy-conv", "--options")
    assert "encoder 'toy-conv' (builtin.toys): recipe options" in table.stdout


TWICE = '''
import torch
from rdmx import hookimpl
from rdmx.represent.encoder import Encoder, EncoderSpec


class Enc(Encoder):
    def __init__(self, config=None):
        super().__init__(EncoderSpec("twice", "family-in-the-spec", "none", dim=4, resolution=8, dtype="float32",
                                     mean=(0.0,), std=(1.0,)))
        self.lin = torch.nn.Linear(1, 4)
        self.freeze()

    def features(self, x):
        return self.lin(x.mean(dim=(2, 3)))


def build(config):
    return Enc()


@hookimpl
def rdmx_register_encoders(register):
    register("twice-family", "rdmx_twice.plugin:build", dim=4, resolution=8, family="family-in-register")
    register("no-dim", "rdmx_twice.plugin:build", resolution=8)
'''


def test_metadata_declared_twice_must_agree_and_strict_mode_wants_dim(tmp_path):
    pkg = tmp_path / "src" / "rdmx_twice"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(TWICE)
    from rdmx.plugins import Plugins
    import importlib

    # the module registered as a plugin in-process, as an installed entry point would be
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        module = importlib.import_module("rdmx_twice.plugin")
        plugins = Plugins(strict=False)
        from rdmx.plugins import PluginInfo

        info = PluginInfo("twice", "rdmx-twice", "0.0.1", "rdmx_twice.plugin")
        plugins._load_one(info, lambda: module)
        assert info.status == "warning" and "no-dim register no dim or resolution" in info.error
        plugins._commit()
        from rdmx.components import build_checked
        from rdmx.errors import PluginError

        with pytest.raises(PluginError, match=r"registered family='family-in-register' but its EncoderSpec says "
                                              r"family='family-in-the-spec'"):
            build_checked(plugins.get("encoders", "twice-family"), None)
        strict = Plugins(strict=True)
        with pytest.raises(PluginError, match="RDMX_STRICT_PLUGINS makes this an error"):
            strict._load_one(PluginInfo("twice", "rdmx-twice", "0.0.1", "rdmx_twice.plugin"), lambda: module)
    finally:
        sys.path.remove(str(tmp_path / "src"))
