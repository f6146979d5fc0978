"""benchmarks/step_memory.py projects phase 3's saved-for-backward bytes from each component alone
(the line through chunks of 1 and 2): the projection equals what a real image-cached phase-3 chunk
saves at its peak."""

from __future__ import annotations

import contextlib
import importlib.util
import sys

import pytest
import torch

from rdmx.plugins import get_plugins
from rdmx.train import shard
from rdmx.train.generator import DataInfo
from rdmx.train.gradcache import _replay_image
from rdmx.train.memory import SavedTensorMeter
from tests.helpers import ROOT


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("step_memory", ROOT / "benchmarks" / "step_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("recompute", [False, True])
def test_projection_equals_a_real_phase3_chunk(recompute):
    sm = _module()
    info = DataInfo((3, 32, 32), 10)
    tiny = {"tiny": True, "resolution": 48}
    m = {"gen": sm.generator_memory("pmf-h", {"tiny": True}, info, recompute),
         "encoders": {"mae": sm.encoder_memory("mae", tiny, None, "float32", info.sample_shape),  # bf16 autocast
                      "convnext": sm.encoder_memory("convnext", tiny, None, "float32", info.sample_shape)}}
    assert m["encoders"]["mae"]["fixed"] > 0  # autocast's bf16 weight copies do not grow with the chunk
    assert all(e["per_image"] > 0 for e in m["encoders"].values()) and m["gen"]["per_image"] > 0

    chunk = 5
    projected, _ = sm.peak(m, chunk)
    static = m["gen"]["static"] + sum(e["weights"] for e in m["encoders"].values())

    plugins = get_plugins()
    gen = plugins.get("generators", "pmf-h").build({"tiny": True, "weights": "random", "zero_init": False}, info)
    if recompute:
        shard.checkpoint_units(shard.shard_units(gen))
    encs = {k: plugins.get("encoders", k).build({**tiny, "weights": "random"}) for k in ("mae", "convnext")}
    g = torch.Generator().manual_seed(0)
    noise, cond = gen.sample_noise(chunk, g), gen.sample_conditions(chunk, g)
    grads = {k: torch.randn(chunk, e.dim, generator=g) for k, e in encs.items()}
    with SavedTensorMeter() as meter:
        _replay_image(gen, encs, noise, cond, grads, lambda name: contextlib.nullcontext())
    assert projected - static == meter.peak  # the generator's graph plus the largest encoder's, byte for byte
