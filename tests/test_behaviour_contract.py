"""The mistakes that once trained to exit 0 (a plugin author's encoder that is not frozen, depends on
its batch, detaches its input, is not deterministic, or returns constant features), each written as
a small plugin, are caught by `rdmx run --dry-run` (and before any training) naming the encoder,
its plugin, the property and a number; an encoder that is stochastic on purpose declares it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import rdmx
from tests.test_engine import QUICK

ENCODERS = '''
import torch
from rdmx.represent.encoder import Encoder, EncoderSpec


class Small(Encoder):
    def __init__(self, fault):
        super().__init__(EncoderSpec(f"mistake-{fault}", "test", "none", dim=8, resolution=8, dtype="float32",
                                     mean=(0.0,), std=(1.0,), weights="random"))
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.drop = torch.nn.Dropout(0.5)
        self.fault = fault
        self.freeze()
        if fault == "bn-train":
            self.bn.train()  # the mistake: BatchNorm left in train mode

    def features(self, x):
        h = self.bn(self.conv(x)).mean(dim=(2, 3))
        if self.fault == "batch-stat":
            h = h - h.mean(dim=0, keepdim=True)  # a statistic of the batch
        if self.fault == "detach":
            h = h.detach()
        if self.fault in ("dropout", "stochastic"):
            h = torch.nn.functional.dropout(h, 0.5, training=True)
        if self.fault == "constant":
            h = h * 0 + 1.0
        return h


def build(config, fault=None):
    return Small(fault)
'''

PLUGIN = '''
import functools
from rdmx import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    for fault in ("bn-train", "batch-stat", "detach", "dropout", "constant", "stochastic"):
        extra = {"contract_skip": ("deterministic", "batch_independent")} if fault == "stochastic" else {}
        register(f"mistake-{fault}", f"rdmx_mistakes.encoders:{fault.replace('-', '_')}", dim=8, resolution=8, **extra)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    src, target = tmp_path_factory.mktemp("mistakes-src"), tmp_path_factory.mktemp("mistakes-site")
    pkg = src / "rdmx-mistakes" / "rdmx_mistakes"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    factories = "".join(f"\n\ndef {f.replace('-', '_')}(config):\n    return Small({f!r})\n"
                        for f in ("bn-train", "batch-stat", "detach", "dropout", "constant", "stochastic"))
    (pkg / "encoders.py").write_text(ENCODERS + factories)
    (pkg / "plugin.py").write_text(PLUGIN)
    (src / "rdmx-mistakes" / "pyproject.toml").write_text('''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "rdmx-mistakes"
version = "0.0.1"

[project.entry-points.rdmx]
mistakes = "rdmx_mistakes.plugin"

[tool.setuptools]
packages = ["rdmx_mistakes"]
''')
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(src / "rdmx-mistakes")], check=True, capture_output=True, text=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


CASES = [
    ("bn-train", "frozen: modules in training mode: bn (BatchNorm2d)", "call self.freeze()"),
    ("batch-stat", "batch-independent: an image's features alone and in a batch of", "statistics of the batch"),
    ("detach", "differentiable: the gradient at the input images is none", "no torch.no_grad(), .detach()"),
    ("dropout", "deterministic: the same images twice give features differing by up to", "switch off dropout"),
    ("constant", "not-constant: 3 different images give the same features", "do not depend on the image"),
]


@pytest.mark.parametrize("fault, problem, fix", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_is_caught_by_the_dry_run(site, tmp_path, fault, problem, fix):
    block = f'battery.encoders[2]={{ name = "mistake-{fault}", label = "mine" }}'
    out = rdmx("run", str(QUICK), "--dry-run", "--set", block, "--set", "data.image_size=16", env=site, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert f"encoder 'mine' (mistake-{fault}, plugin rdmx-mistakes): {problem}" in out.stderr, out.stderr
    assert fix in out.stderr


def test_a_declared_opt_out_is_honoured_and_a_run_checks_before_training(site, tmp_path):
    block = 'battery.encoders[2]={ name = "mistake-stochastic", label = "mine" }'
    ok = rdmx("run", str(QUICK), "--dry-run", "--set", block, "--set", "data.image_size=16", env=site, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = 'battery.encoders[2]={ name = "mistake-bn-train", label = "mine" }'
    sets = ["--set", bad, "--set", "data.image_size=16", "--set", "train.steps=1", "--set", "tracking.backend=none",
            "--set", f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    out = rdmx("run", str(QUICK), *sets, "--out", str(tmp_path / "o"), "--no-progress", env=site, cwd=tmp_path)
    assert out.returncode == 2 and "checked before any training" in out.stderr
    assert not (tmp_path / "cache").exists()  # no feature was extracted
