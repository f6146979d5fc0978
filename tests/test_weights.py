"""Weight status and fetch: file-system look-ups, offline refusal, URL download + unzip, CLI."""

from __future__ import annotations

import time
import zipfile

import pytest
from typer.testing import CliRunner

from rdmx.errors import RdmxError
from rdmx.registry import EmptyConfig, Entry, Registry
from rdmx.represent import weights
from rdmx.represent.presets import (
    HFSource,
    URLSource,
    availability,
    hf_hub_cache,
    torch_hub_dir,
)
from rdmx.testing import isolate_weight_caches


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def _registry(tmp_path):
    hf = HFSource("org/model", (("config.json",), ("model.safetensors", "pytorch_model.bin")), subfolder="sub")
    payload = tmp_path / "payload.zip"
    with zipfile.ZipFile(payload, "w") as z:
        z.writestr("pack/a.txt", "a")
        z.writestr("pack/b.txt", "b")
    url = URLSource(payload.as_uri(), lambda: torch_hub_dir() / "zipped", "payload.zip", unzip_check=("pack/a.txt",))
    reg = Registry("encoders")
    for name, srcs in (("hf-enc", (hf,)), ("url-enc", (url,))):
        reg.add(Entry("encoders", name, lambda c: None, EmptyConfig, "", "test-plugin", "0",
                      {"checkpoint": name, "weights_sources": srcs, "weights_available": availability(srcs)}))
    reg.add(Entry("encoders", "no-weights", lambda c: None, EmptyConfig, "", "test-plugin", "0", {}))
    return reg, hf


def test_cache_locations_follow_the_libraries_rules(cache, monkeypatch):
    assert hf_hub_cache() == cache / "hf" / "hub"
    assert torch_hub_dir() == cache / "torch" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "elsewhere"))
    assert hf_hub_cache() == cache / "elsewhere"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.delenv("TORCH_HOME")
    assert hf_hub_cache() == cache / "xdg" / "huggingface" / "hub"
    assert torch_hub_dir() == cache / "xdg" / "torch" / "hub"


def test_status_reads_the_hub_cache_layout(cache):
    reg, hf = _registry(cache)
    by = {s.name: s for s in weights.status(reg)}
    assert by["hf-enc"].label == by["url-enc"].label == "missing" and by["no-weights"].label == "n/a"
    root = hf_hub_cache() / "models--org--model"
    old, new = root / "snapshots" / "old" / "sub", root / "snapshots" / "new" / "sub"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    assert hf.locate() is None  # one required file still missing
    (old / "pytorch_model.bin").write_bytes(b"x")
    assert hf.locate() == (old, "old")
    new.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (new / f).write_text("{}")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("new")
    assert hf.locate() == (new, "new")  # refs/main wins
    assert hf.file(("model.safetensors",)) == (new / "model.safetensors", "new")
    assert {s.name: s.label for s in weights.status(reg)}["hf-enc"] == "cached"


def test_fetch_refuses_quickly_when_offline(cache):
    reg, _ = _registry(cache)
    t = time.perf_counter()
    with pytest.raises(RdmxError, match="HF_HUB_OFFLINE"):
        weights.fetch(["hf-enc"], reg)
    assert time.perf_counter() - t < 2
    with pytest.raises(RdmxError, match="did you mean: hf-enc"):
        weights.fetch(["hf-en"], reg)
    with pytest.raises(RdmxError, match="declares no downloadable weights"):
        weights.fetch(["no-weights"], reg)


def test_fetch_downloads_and_unzips_url_sources(cache):
    reg, _ = _registry(cache)
    got = weights.fetch(["url-enc"], reg)
    assert [s.label for s in got] == ["cached"]
    assert (torch_hub_dir() / "zipped" / "pack" / "b.txt").read_text() == "b"


def test_cli_list_and_fetch(cache, monkeypatch):
    from rdmx import cli_weights

    reg, _ = _registry(cache)
    monkeypatch.setattr(cli_weights, "_registry", lambda: reg)
    r = CliRunner().invoke(cli_weights.app, ["list"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "hf-enc" in r.output and "missing" in r.output
    r = CliRunner().invoke(cli_weights.app, ["fetch", "hf-enc"])  # rdmx.cli prints it as one line, exit 2
    assert isinstance(r.exception, RdmxError) and "HF_HUB_OFFLINE" in str(r.exception)
