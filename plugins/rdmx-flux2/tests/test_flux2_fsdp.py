"""The paper's text-to-image recipe shards FLUX.2's transformer with FSDP2: on 2 torchrun-style
processes (gloo, CPU) the tiny FLUX.2 generator, sharded per transformer block with its frozen
VAE decoder beside, gets the same gradient and makes the same updates as one unsharded process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from flux2_tiny import make_workspace

from tests.helpers import run_single_and_ranks

WORKER = Path(__file__).with_name("fsdp_flux2_worker.py")


def test_fsdp_shards_the_transformer_and_matches_one_process(tmp_path):
    root = make_workspace(tmp_path)
    train = {"batch": 8, "micro_batch": 2, "steps": 2}
    worker = [sys.executable, str(WORKER), str(root)]
    run_single_and_ranks(worker, [str(tmp_path / "one"), json.dumps(train)],
                         [str(tmp_path / "two"), json.dumps({**train, "shard": "fsdp"})], cwd=None)
    one = torch.load(tmp_path / "one" / "result.pt", weights_only=False)
    two = torch.load(tmp_path / "two" / "result.pt", weights_only=False)
    assert not one["sharded"] and two["sharded"] and two["units"] >= 3  # 2 transformer blocks + the root
    assert set(two["grads"]) == set(one["grads"]) and all(k.startswith("transformer.") for k in one["grads"])
    g1 = torch.cat([one["grads"][k].flatten() for k in sorted(one["grads"])])
    g2 = torch.cat([two["grads"][k].flatten() for k in sorted(one["grads"])])
    assert g1.abs().sum() > 0
    assert float((g2 - g1).norm() / g1.norm()) < 1e-5
    for a, b in zip(two["losses"], one["losses"], strict=True):
        assert abs(a - b) <= 1e-5 * abs(b)
    for k, v in one["params"].items():
        assert torch.allclose(two["params"][k], v, atol=1e-5), k
