"""MLflow parameter handling, the example plugin used by name in a recipe, and `rdmx ui`."""

from __future__ import annotations

import socket
import os
import signal
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
        busy = subprocess.run([sys.executable, "-m", "rdmx.cli", "ui", "--port", str(port)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in busy.stderr
        # SIGTERM to rdmx ui alone: the MLflow server and its workers end with it
        family = _descendants(proc.pid)
        assert family
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in family):
            time.sleep(0.2)
        assert not [p for p in family if _alive(p)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _descendants(pid: int) -> list[int]:
    from pathlib import Path

    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p in frontier]
        out += kids
        frontier = kids
    return out


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
