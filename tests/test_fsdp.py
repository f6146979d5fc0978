"""A generator sharded with FSDP2 over 2 torchrun-style processes (gloo, CPU), with per-block
activation checkpointing, trains exactly like one unsharded process; its sharded checkpoint (each
rank writes its own shards) resumes a killed sharded run to the same result."""

from __future__ import annotations

import json
import sys

import torch

from tests.helpers import ROOT, run_single_and_ranks
from tests.test_engine import TINY


def test_fsdp_two_ranks_equal_one_process_and_resume_exactly(tmp_path):
    sets = [s for s in TINY if not s.startswith(("train.batch", "train.micro_batch", "train.steps"))]
    sets += ["train.batch=64", "train.micro_batch=16", "train.steps=3", "train.checkpoint_every=2",
             "tracking.backend=none", "eval.n=32", f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    sharded = [*sets, 'train.shard="fsdp"', "train.activation_checkpointing=true"]
    worker = [sys.executable, str(ROOT / "tests" / "fsdp_worker.py")]
    run_single_and_ranks(worker, [str(tmp_path / "one"), json.dumps(sets)], [str(tmp_path / "two"), json.dumps(sharded)])
    one = torch.load(tmp_path / "one" / "rank0-of-1.pt", weights_only=False)
    ranks = [torch.load(tmp_path / "two" / f"rank{r}-of-2.pt", weights_only=False) for r in range(2)]
    assert not one["sharded"] and one["units"] == 0
    for rank in ranks:
        assert rank["sharded"] and rank["units"] == 2 + 1  # the conv generator's two 16-px blocks + the root
        # the full-batch gradient (gathered from the shards), equal to the single process's
        assert (rank["grad"] - one["grad"]).norm() / one["grad"].norm() < 1e-5
        for a, b in zip(rank["history"], one["history"], strict=True):
            assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"])
            assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5 * b["grad_norm"]
        assert torch.allclose(rank["params"], one["params"], atol=1e-5)
        # killed after the step-2 checkpoint and resumed: the same parameters, bit for bit
        assert torch.equal(rank["resumed"], rank["params"])
        # the checkpoint carries the run's history: the resumed run's is the straight run's, step for step
        assert [h["loss"] for h in rank["resumed_history"]] == [h["loss"] for h in rank["history"]]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert torch.equal(one["resumed"], one["params"])
    s0 = ranks[0]["summary"]
    assert s0["sharded"] and s0["world_size"] == 2 and s0["final"] and ranks[1]["summary"]["final"] == {}
    # evaluation shared by both ranks: the same metrics as one process's (parameters equal to 1e-5)
    for k, v in one["summary"]["final"].items():
        assert abs(s0["final"][k] - v) <= 1e-3 * abs(v) + 1e-6, k
    path = tmp_path / "two" / "straight"
    from rdmx.train.checkpoint import open_checkpoint

    ckpt = open_checkpoint(path)
    assert ckpt.step == 3 and ckpt.manifest["sharded"] and ckpt.manifest["world_size"] == 2
    assert {"model/__0_0.distcp", "model/__1_0.distcp", "optim/__0_0.distcp", "optim/__1_0.distcp"} <= set(
        ckpt.manifest["files"])  # every rank wrote its own shards
    # one process reads it as rdmx eval / rdmx sample do: the unsharded generator, the same parameters
    from rdmx.checkpoints import load_generator
    from rdmx.recipe import load_recipe

    comp, _ = load_generator(load_recipe(ROOT / "recipes" / "quickstart.toml", sharded), path)
    assert torch.equal(torch.cat([p.detach().flatten() for p in comp.generator.parameters()]), ranks[0]["params"])
