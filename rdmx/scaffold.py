"""``rdmx new plugin encoder NAME``: a plugin package whose tests and dry run pass as written, to
fill in. It has what an afternoon's encoder needs: the entry point, a config with descriptions, the
registration with ``dim`` / ``resolution`` as functions of the config, a frozen encoder with a
seeded random init, the contract test and a dry-run test. Nothing is written over an existing
folder."""

from __future__ import annotations

import re
from pathlib import Path

from rdmx import __version__
from rdmx.errors import RdmxError

KINDS = ("encoder",)

FILES = {
    "pyproject.toml": '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "An rdmx encoder plugin: {name}"
requires-python = ">=3.10"
dependencies = ["rdmx>={rdmx_major_minor}", "torch"]

# the one line that makes rdmx find the plugin: group "rdmx", any name, the module with the hooks
[project.entry-points.rdmx]
{module} = "{module}.plugin"

[tool.setuptools]
packages = ["{module}"]
''',
    "README.md": '''# {dist}

An rdmx encoder plugin. `pip install -e .`, then `rdmx list encoders {name} --options`, and use it in a
recipe's battery:

```toml
[[battery.encoders]]
name = "{name}"
label = "mine"
```

`python -m pytest tests` runs the encoder contract and a dry run of the quickstart with it.
Change `{module}/encoder.py` (`preprocess` and `features`); keep `spec` true to what the features
are (bump `preset_version` when a code change alters them).
''',
    "{module}/__init__.py": '',
    "{module}/plugin.py": '''"""Hook implementations. Keep this module light (no torch import): `rdmx list` imports it."""

from pydantic import Field

from rdmx import ComponentConfig, hookimpl


class {cls}Config(ComponentConfig):
    """Options a recipe may set in its battery entry."""

    resolution: int = Field(32, ge=8, le=1024, description="images are resized to this side first")
    width: int = Field(16, ge=1, description="channels of the convolution")
    dim: int = Field(64, ge=1, description="feature dimension")
    seed: int = Field(0, ge=0, description="seed of the random initialisation")


@hookimpl
def rdmx_register_encoders(register):
    register(
        "{name}",
        "{module}.encoder:build",
        config={cls}Config,
        description="{name}: a small frozen convolutional encoder (replace with yours)",
        resolution=lambda c: c.resolution,
        dim=lambda c: c.dim,
        weights="random",
        family="{module}",
        pooling="mean",
    )
''',
    "{module}/encoder.py": '''"""The encoder: images in [0, 1] -> (B, dim) float32 features, frozen, differentiable in the images."""

import torch

from rdmx.represent.encoder import Encoder, EncoderSpec


class {cls}(Encoder):
    def __init__(self, config):
        super().__init__(EncoderSpec(
            name="{name}", family="{module}", checkpoint="(random)", dim=config.dim, resolution=config.resolution,
            weights="random", seed=config.seed, resize="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
            pooling="mean", dtype="float32", preset_version="1",
        ))
        g = torch.Generator().manual_seed(config.seed)
        self.conv = torch.nn.Conv2d(3, config.width, 3, padding=1)
        self.head = torch.nn.Linear(config.width, config.dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        self.freeze()  # eval mode, no parameter requires grad: the contract checks it

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def build(config):
    return {cls}(config)
''',
    "tests/test_{module}.py": '''"""The contract from rdmx's testing kit (offline, no conftest needed) and a dry run with the encoder."""

import pytest

from rdmx.cli import main
from rdmx.testing import check_encoder_contract


@pytest.mark.parametrize("config", [{{}}, {{"dim": 8, "width": 4, "resolution": 16}}])
def test_contract(config):
    f = check_encoder_contract("{name}", config, batch=3, size=24)
    assert f.shape == (3, config.get("dim", 64))


def test_a_dry_run_with_it(tmp_path, capsys):
    """rdmx builds the encoder as a run would and checks its behaviour (frozen, deterministic, ...)."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    with pytest.raises(SystemExit) as done:
        main(["run", str(recipe), "--dry-run"])
    out, err = capsys.readouterr()
    assert done.value.code in (0, None), err
    assert "encoder 'mine' ({name}, plugin {dist})" in out


RECIPE = """
name = "{name}-dry-run"
[data]
name = "digits"
image_size = 16
[generator]
name = "conv"
[estimator]
name = "mmd-nystrom"
landmarks = 32
[[battery.encoders]]
name = "{name}"
label = "mine"
[[battery.encoders]]
name = "toy-conv"
label = "held"
role = "heldout"
[tracking]
backend = "none"
"""
''',
}


def new_plugin(kind: str, name: str, out: str | Path | None = None) -> list[Path]:
    """Write the package ``rdmx-NAME`` (or ``out``); returns the files written."""
    if kind not in KINDS:
        raise RdmxError(f"rdmx new plugin: kind {kind!r}: the template exists for {', '.join(KINDS)}")
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,40}", name):
        raise RdmxError(f"rdmx new plugin: name {name!r}: lower-case letters, digits and '-', starting with a letter "
                        "(it is the name recipes use)")
    module = "rdmx_" + name.replace("-", "_")
    dist = "rdmx-" + name
    root = Path(out) if out is not None else Path(dist)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise RdmxError(f"{root} exists and is not empty; give another --out (nothing was written)")
    cls = "".join(part.capitalize() for part in name.split("-")) + "Encoder"
    values = {"name": name, "module": module, "dist": dist, "cls": cls,
              "rdmx_major_minor": ".".join(__version__.split(".")[:2])}
    written = []
    for rel, text in FILES.items():
        path = root / rel.format(**values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values))
        written.append(path)
    return written
