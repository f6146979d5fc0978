"""Weights from URLs (sha256, progress, resume) and from the hub (pinned revisions, partial
snapshots), against HTTP servers on 127.0.0.1: a plain file server and a stand-in hub whose
cache is laid out by huggingface_hub itself. Nothing reaches the internet."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from rdmx.errors import RdmxError
from rdmx.registry import EmptyConfig, Entry, Registry
from rdmx.represent import weights
from rdmx.represent.download import download
from rdmx.represent.presets import HFSource, URLSource, availability, hf_hub_cache
from rdmx.testing import isolate_weight_caches

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
HUB = {COMMIT_A: {"config.json": b'{"v": 1}', "model.safetensors": b"w" * 3000}}


class Server(http.server.BaseHTTPRequestHandler):
    """``/good.pth`` and ``/cut.pth`` (the first transfer stops half way) with HTTP Range; a stand-in
    hub at ``/<org>/<repo>/resolve/<rev>/<file>`` (``main`` = its only commit)."""

    cuts: set[str] = set()
    ranges: list[str] = []

    def log_message(self, *args):
        """No request log on stderr (the test's output stays readable)."""

    def _hub(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        commit = COMMIT_A if parts[3] == "main" else parts[3]
        body = HUB.get(commit, {}).get("/".join(parts[4:]))
        return None if body is None else (commit, body)

    def _send(self, head: bool):
        hub = self._hub()
        if hub is not None:
            commit, body = hub
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        if self.path not in ("/good.pth", "/cut.pth"):
            self.send_response(404)
            self.end_headers()
            return
        start = 0
        if self.headers.get("Range"):
            Server.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        if head:
            return
        if self.path == "/cut.pth" and self.path not in Server.cuts:  # the first transfer dies half way
            Server.cuts.add(self.path)
            self.wfile.write(PAYLOAD[start : len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD[start:])

    def do_GET(self):
        self._send(False)

    def do_HEAD(self):
        self._send(True)


@pytest.fixture
def server():
    Server.cuts, Server.ranges = set(), []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def test_a_good_file_is_kept_a_wrong_hash_refused_and_removed(server, tmp_path):
    dest = download(f"{server}/good.pth", tmp_path / "w.pth", SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(RdmxError, match=r"good.pth: its sha256 .* is not the expected 00000000.*removed"):
        download(f"{server}/good.pth", tmp_path / "x.pth", "0" * 64, progress=False)
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "x.pth.part").exists()
    # torch.hub's convention: a name ending in -<sha256 prefix> is checked against that prefix
    assert URLSource("u", lambda: tmp_path, f"net-{SHA[:8]}.pth").expected_hash() == SHA[:8]
    assert URLSource("u", lambda: tmp_path, "net.pth").expected_hash() is None


def test_a_transfer_cut_half_way_is_kept_and_resumed(server, tmp_path):
    with pytest.raises(RdmxError, match=r"cut.pth stopped after .*bytes.*kept and fetching again resumes it"):
        download(f"{server}/cut.pth", tmp_path / "c.pth", SHA, progress=False)
    part = tmp_path / "c.pth.part"
    assert part.stat().st_size == len(PAYLOAD) // 2 and not (tmp_path / "c.pth").exists()
    assert download(f"{server}/cut.pth", tmp_path / "c.pth", SHA, progress=False).read_bytes() == PAYLOAD
    assert Server.ranges == [f"bytes={len(PAYLOAD) // 2}-"] and not part.exists()


def _hub_registry(source):
    reg = Registry("encoders")
    reg.add(Entry("encoders", "hub-enc", lambda c: None, EmptyConfig, "", "test-plugin", "0",
                  {"checkpoint": source.repo, "weights_sources": (source,), "weights_available": availability((source,))}))
    return reg


@pytest.fixture
def hub(server, cache, monkeypatch):
    """The stand-in hub as HF_ENDPOINT, with the hub library's offline switch off."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return server


def test_hub_weights_fetched_into_the_hub_cache_and_pinned(hub, tmp_path, monkeypatch):
    files = (("config.json",), ("model.safetensors", "pytorch_model.bin"))
    src = HFSource("org/model", files)
    reg = _hub_registry(src)
    [got] = weights.fetch(["hub-enc"], reg)
    snap = hf_hub_cache() / "models--org--model" / "snapshots" / COMMIT_A
    assert got.label == "cached" and got.revision == COMMIT_A and got.revision_label == f"unpinned, cached {COMMIT_A[:12]}"
    assert (snap / "model.safetensors").read_bytes() == HUB[COMMIT_A]["model.safetensors"]
    assert (hf_hub_cache() / "models--org--model" / "refs" / "main").read_text() == COMMIT_A  # the hub library's layout
    assert src.locate() == (snap, COMMIT_A)
    # pinned to another commit: not found, and the message says which is cached
    pins = tmp_path / "pins.toml"
    pins.write_text(f'[pins]\n"org/model" = "{COMMIT_B}"\n')
    monkeypatch.setenv("RDMX_WEIGHTS_PINS", str(pins))
    assert src.locate() is None and src.describe() == f"hf://org/model@{COMMIT_B[:12]}"
    [st] = weights.status(reg)
    assert st.label == "missing" and st.revision_label == f"pinned {COMMIT_B[:12]} (not cached)"
    assert st.detail == f"the pinned revision {COMMIT_B[:12]} of hf://org/model@{COMMIT_B[:12]} is not in the local " \
                        f"cache (cached: {COMMIT_A[:12]})"
    # `rdmx weights pin` writes the cached commit; the pin is then found
    assert weights.pin(["hub-enc"], pins, reg) == {"org/model": COMMIT_A}
    assert src.locate() == (snap, COMMIT_A) and weights.status(reg)[0].revision_label == f"pinned {COMMIT_A[:12]} (cached)"
    # a partial snapshot (a download cut short) is named with the file it lacks
    (snap / "model.safetensors").unlink()
    assert src.locate() is None
    assert "cached only in part: snapshot aaaaaaaaaaaa lacks model.safetensors" in src.diagnose()
    weights.fetch(["hub-enc"], reg)  # fetched again, at the pinned commit
    assert src.locate() == (snap, COMMIT_A)


def test_a_bad_pins_file_is_named(tmp_path, monkeypatch):
    pins = tmp_path / "pins.toml"
    pins.write_text('[pins]\n"org/model" = "main"\n')
    monkeypatch.setenv("RDMX_WEIGHTS_PINS", str(pins))
    with pytest.raises(RdmxError, match=r"pins.toml: pins.'org/model' must be a 40-hex commit hash, not 'main'"):
        HFSource("org/model", (("config.json",),)).locate()


def test_weights_list_says_how_each_source_is_checked(cache, server):
    hashed = URLSource(f"{server}/good.pth", lambda: cache / "dl", f"good-{SHA[:8]}.pth")
    plain = URLSource(f"{server}/good.pth", lambda: cache / "dl", "plain.pth")
    reg = Registry("encoders")
    for name, src in (("hashed", hashed), ("plain", plain)):
        reg.add(Entry("encoders", name, lambda c: None, EmptyConfig, "", "test-plugin", "0",
                      {"checkpoint": name, "weights_sources": (src,), "weights_available": availability((src,))}))
    got = {s.name: s for s in weights.fetch(["hashed", "plain"], reg)}
    assert got["hashed"].revision_label == f"sha256 {SHA[:8]}" and got["plain"].revision_label == "no published sha256"
    assert (cache / "dl" / f"good-{SHA[:8]}.pth").read_bytes() == PAYLOAD
    assert "(no published sha256: unverified)" in plain.describe() and "unverified" not in hashed.describe()
