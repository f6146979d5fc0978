"""MLflow parameter handling, the example plugin used by name in a recipe, and `rdmx ui`."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

from rdmx.track.base import flatten
from rdmx.track.mlflow_tracker import MAX_PARAM_VALUE, param_items, safe_key
from tests.helpers import ROOT, rdmx


def test_flatten_and_long_values_are_cut_not_crashed():
    params = param_items({"a": {"b": 1}, "l": [{"x": "y"}], "long": "z" * (MAX_PARAM_VALUE + 500)})
    assert params["a.b"] == "1" and params["l.0.x"] == "y"
    assert len(params["long"]) <= MAX_PARAM_VALUE and params["long"].endswith(f"[truncated, {MAX_PARAM_VALUE + 500} chars]")
    assert flatten({"e": [{"n": 1}, {"n": 2}]}) == {"e.0.n": 1, "e.1.n": 2}
    assert safe_key("raw/enc[1]+x") == "raw/enc_1__x"


def test_example_plugin_encoder_is_usable_by_name(tmp_path):
    recipe = tmp_path / "r.toml"
    text = (ROOT / "recipes" / "quickstart.toml").read_text()
    recipe.write_text(text.replace('name = "pixels"\nresolution = 16', 'name = "example-hog"\ncells = 2'))
    res = rdmx("run", str(recipe), "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "encoder 'example-hog' (plugin rdmx-example) [train]: dim 32" in res.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store_on_localhost(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rdmx.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, status = time.time() + 90, None
        while time.time() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    status = r.status
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
        assert status == 200, proc.stdout.read() if proc.poll() is not None else "no answer"
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
