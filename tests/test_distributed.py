"""Two torchrun-style processes (gloo, CPU) train exactly like one process."""

from __future__ import annotations

import json
import sys

import torch

from tests.helpers import ROOT, run_single_and_ranks
from tests.test_engine import TINY


def test_two_ranks_equal_one_process(tmp_path):
    """Same update on 2 ranks × micro 16 as on 1 process × micro 32, with the release's loss scale
    (train.loss_scale = { reference_micro_batch = 8 }: the effective gradient is ∇L · 8 / N on both)."""
    sets = [s for s in TINY if not s.startswith(("train.batch", "train.micro_batch", "train.steps"))]
    sets += ["train.batch=64", "train.micro_batch=16", "train.steps=2", "tracking.backend=none",
             "train.loss_scale={ reference_micro_batch = 8 }",
             f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    worker = [sys.executable, str(ROOT / "tests" / "dist_worker.py")]
    run_single_and_ranks(worker, [str(tmp_path / "one"), json.dumps([*sets, "train.micro_batch=32"])],
                         [str(tmp_path / "two"), json.dumps(sets)], timeout=600)
    one = torch.load(tmp_path / "one" / "rank0-of-1.pt", weights_only=False)
    ranks = [torch.load(tmp_path / "two" / f"rank{r}-of-2.pt", weights_only=False) for r in range(2)]
    for rank in ranks:
        # the full-batch gradient on every rank, equal to the single process's (summation order aside)
        assert torch.allclose(rank["grad"], one["grad"], rtol=1e-5, atol=1e-8)
        assert (rank["grad"] - one["grad"]).norm() / one["grad"].norm() < 1e-5
        for a, b in zip(rank["history"], one["history"], strict=True):
            assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"])
            assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5 * b["grad_norm"]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])  # ranks stay in sync
    assert torch.allclose(ranks[0]["params"], one["params"], atol=1e-5)
    assert ranks[0]["summary"]["world_size"] == 2 and ranks[0]["summary"]["final"]
    assert ranks[1]["summary"]["final"] == {}  # only rank 0 evaluates, tracks and checkpoints
    from rdmx.train.checkpoint import open_checkpoint

    ckpt = open_checkpoint(tmp_path / "two" / "run")
    assert ckpt.step == 2 and ckpt.manifest["world_size"] == 2 and not ckpt.manifest["sharded"]
