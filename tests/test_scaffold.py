"""`rdmx new plugin encoder NAME`: the package it writes installs, lists, and passes its own tests
(the contract and a dry run) as written; bad names and used folders are one line."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import rdmx


def test_the_template_passes_its_own_tests_out_of_the_box(tmp_path):
    made = rdmx("new", "plugin", "encoder", "my-enc", "--out", str(tmp_path / "rdmx-my-enc"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(tmp_path / "rdmx-my-enc")], check=True,
                   capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    listed = rdmx("list", "encoders", "my-enc", "--options", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "encoder 'my-enc' (rdmx-my-enc): recipe options" in listed.stdout
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                            str(tmp_path / "rdmx-my-enc" / "tests")], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, **env, "PYTEST_ADDOPTS": ""}, timeout=300)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout[-3000:] + tests.stderr[-2000:]


def test_bad_names_and_used_folders_are_one_line(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("mine")
    for args, message in ((["encoder", "My_Enc"], "lower-case letters, digits and '-'"),
                          (["metric", "m"], "the template exists for encoder"),
                          (["encoder", "ok-name", "--out", str(tmp_path / "used")], "exists and is not empty")):
        res = rdmx("new", "plugin", *args, cwd=tmp_path)
        assert res.returncode == 2 and message in res.stderr, res.stderr
    assert (tmp_path / "used" / "x").read_text() == "mine"
