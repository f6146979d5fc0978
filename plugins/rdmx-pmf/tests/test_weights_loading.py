"""Warm starts: ``weights = PATH`` (safetensors or torch, release or upstream layout) loads with no
missing or unexpected keys; ``"pretrained"`` reads the local Hugging Face cache or stops with
`rdmx weights fetch pmf-h`; `rdmx weights` lists and refuses offline."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.represent import weights as weight_status
from rdmx.represent.presets import hf_hub_cache
from rdmx.testing import isolate_weight_caches, registered_entries
from rdmx.train.generator import DataInfo
from rdmx_pmf.generator import _weights_file
from rdmx_pmf.plugin import rdmx_register_generators
from rdmx_pmf.presets import PMF_H_FILE, PMF_H_REPO, PRESETS, TINY

ENTRIES = registered_entries(rdmx_register_generators, "rdmx-pmf", kind="generators")
INFO = DataInfo((3, 32, 32), 10, tuple(f"c{i}" for i in range(10)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return isolate_weight_caches(tmp_path, monkeypatch)


def tiny_arch(monkeypatch):
    """Let pmf-h load files of the tiny network's layout (a real-size file would be 3.8 GB)."""
    monkeypatch.setattr("rdmx_pmf.generator.arch_for", lambda name, tiny=False: TINY)


def source_state(seed=7) -> dict[str, torch.Tensor]:
    gen = ENTRIES["pmf-h"].build({"tiny": True, "zero_init": False, "seed": seed}, INFO)
    return {k: v.clone() for k, v in gen.state_dict().items()}


def upstream(state):
    """The upstream FD-Loss layout of a state: flax names, (1, n, d) tokens, rope buffer, v-head."""
    out = {}
    for k, v in state.items():
        k = k.replace(".linear.weight", "._flax_linear.weight").replace(".linear.bias", "._flax_linear.bias")
        k = k.replace(".embedding.weight", "._flax_embedding.weight")
        out[k] = v[None] if k.endswith("_tokens") else v
    out["net.rope_freqs"] = torch.zeros(4, 8)
    out["net.v_heads.0.attn_scale"] = torch.zeros(64)
    return out


def outputs(gen):
    g = torch.Generator().manual_seed(0)
    z, y = gen.sample_noise(3, g), gen.sample_conditions(3, g)
    gen.config.autocast = "off"
    return gen(z, y)


def warm(path, **cfg):
    return ENTRIES["pmf-h"].build({"weights": str(path), "autocast": "off", **cfg}, INFO)


@pytest.mark.parametrize("layout", ["rdmx", "upstream"])
@pytest.mark.parametrize("container", ["safetensors", "torch-bare", "torch-model-key", "torch-module-prefix"])
def test_weights_path_loads_every_layout_exactly(tmp_path, layout, container, monkeypatch):
    tiny_arch(monkeypatch)
    state = source_state()
    sd = upstream(state) if layout == "upstream" else state
    if container == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = tmp_path / "w.pth"
        if container == "torch-model-key":
            sd = {"model": sd, "step": 4000}
        elif container == "torch-module-prefix":
            sd = {"module." + k: v for k, v in sd.items()}
        torch.save(sd, path)
    gen = warm(path)
    got = gen.state_dict()
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    assert all(p.dtype == torch.float32 and not p.is_meta and p.requires_grad for p in gen.parameters())
    reference = ENTRIES["pmf-h"].build({"tiny": True, "zero_init": False, "seed": 7}, INFO)
    assert torch.equal(outputs(gen), outputs(reference))


def test_bf16_files_load_as_float32(tmp_path, monkeypatch):
    tiny_arch(monkeypatch)
    state = source_state()
    path = tmp_path / "w.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(path))
    gen = warm(path)
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    assert torch.equal(gen.state_dict()["net.pos_embed"], state["net.pos_embed"].to(torch.bfloat16).float())


def test_mismatched_or_unsafe_files_are_clear_errors(tmp_path, monkeypatch):
    tiny_arch(monkeypatch)
    state = source_state()
    broken = dict(state)
    broken.pop("net.u_heads.0.mlp_scale")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(RdmxError, match=r"1 missing: net\.u_heads\.0\.mlp_scale"):
        warm(tmp_path / "broken.pth")
    torch.save({"model": state, "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pth")
    with pytest.raises(RdmxError, match="allow_pickle"):
        warm(tmp_path / "pickled.pth")
    assert warm(tmp_path / "pickled.pth", allow_pickle=True).state_dict().keys() == state.keys()
    with pytest.raises(RdmxError, match="does not exist"):
        warm(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RdmxError, match="not a readable"):
        warm(tmp_path / "junk.pth")


def test_pretrained_without_the_cache_names_the_fetch_command(cache):
    with pytest.raises(WeightsMissingError) as err:
        ENTRIES["pmf-h"].build({}, DataInfo((3, 256, 256), 1000))
    msg = str(err.value)
    assert "rdmx weights fetch pmf-h" in msg and PMF_H_REPO in msg
    with pytest.raises(RdmxError, match="no released weights"):
        ENTRIES["pmf-b"].build({"weights": "pretrained"}, DataInfo((3, 256, 256), 1000))


def test_pretrained_reads_the_hub_cache_layout(cache):
    cfg = ENTRIES["pmf-h"].config()
    snap = hf_hub_cache() / ("models--" + PMF_H_REPO.replace("/", "--")) / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / PMF_H_FILE).write_bytes(b"x")
    assert _weights_file(cfg, PRESETS["pmf-h"]) == str(snap / PMF_H_FILE)
    status = {s.name: s for s in weight_status.status(weight_status._registries(None)) if s.kind == "generators"}
    assert status["pmf-h"].label == "cached" and status["pmf-h"].path == str(snap)
    assert status["pmf-b"].label == "n/a"
    with pytest.raises(RdmxError, match="1000 classes"):  # the released network is ImageNet's
        ENTRIES["pmf-h"].build({}, DataInfo((3, 256, 256), 10))


def test_weights_cli_lists_generators_and_refuses_offline(cache):
    from tests.helpers import rdmx

    env = {"HF_HOME": str(cache / "hf"), "COLUMNS": "250"}
    out = rdmx("weights", "list", env=env)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "pmf-h" in line)
    assert "generator" in row and "missing" in row
    out = rdmx("weights", "fetch", "pmf-h", env=env)
    assert out.returncode == 2 and "HF_HUB_OFFLINE" in out.stderr and "Traceback" not in out.stderr


def test_list_generators_shows_the_family_from_its_entry_point():
    import json

    from tests.helpers import rdmx

    out = rdmx("list", "generators", "pmf-*", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["components"]}
    assert set(rows) == {"pmf-b", "pmf-l", "pmf-h"} and {r["plugin"] for r in rows.values()} == {"rdmx-pmf"}
    assert rows["pmf-h"]["params"] == 955_508_992 and rows["pmf-h"]["weights"] == "pretrained"
    assert rows["pmf-b"]["weights"] == "random"
