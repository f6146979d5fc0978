"""Resume restores the CUDA generators too; the NCCL all-gather waits for its input's stream;
`rdmx reference build` under torchrun places each rank's encoders on its own GPU."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rdmx.train import distributed, legacy_checkpoint


def test_restore_rng_puts_back_cpu_and_cuda_states(monkeypatch):
    got = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: got.setdefault("cuda", list(states)))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    want = torch.rand(3)
    cuda = [torch.full((4,), i, dtype=torch.uint8) for i in range(3)]  # saved on a 3-GPU machine
    torch.manual_seed(6)
    gen = torch.nn.Linear(2, 2)
    ckpt = {"step": 3, "generator": gen.state_dict(), "torch_rng": state, "cuda_rng": cuda}
    assert legacy_checkpoint.restore_training(ckpt, "c.pt", generator=gen, optimizer=None, balancer=None) == 3
    assert torch.equal(torch.rand(3), want)
    assert [int(t[0]) for t in got["cuda"]] == [0, 1]  # as many devices as both have


def test_all_gather_waits_for_the_stream_first(monkeypatch):
    calls = []
    synced = SimpleNamespace(synchronize=lambda: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: synced)
    distributed.sync_before_collective(SimpleNamespace(is_cuda=True, device="cuda:0"))
    distributed.sync_before_collective(torch.zeros(1))  # CPU tensors: nothing to wait for
    assert calls == ["sync"]

    calls.clear()
    monkeypatch.setattr(distributed, "sync_before_collective", lambda x: calls.append("sync"))

    def all_gather(parts, x):
        calls.append("gather")
        for p in parts:
            p.copy_(x)

    monkeypatch.setattr(distributed.dist, "all_gather", all_gather)
    out = distributed._GatherRows.apply(torch.ones(2, 3), 0, 2)
    assert calls == ["sync", "gather"] and out.shape == (4, 3)


def test_reference_build_passes_the_local_rank(monkeypatch, tmp_path):
    import rdmx.cli_reference as cli_reference
    import rdmx.train.build as build
    from typer.testing import CliRunner

    seen = {}

    def fake_build(resolved, plugins=None, local_rank=0):
        seen["local_rank"] = local_rank
        raise SystemExit(0)

    monkeypatch.setattr(build, "build_components", fake_build)
    monkeypatch.setattr(cli_reference, "join_process_group_from_env", lambda: False)
    monkeypatch.setattr(distributed, "from_environment", lambda: distributed.DistContext(rank=3, world=4, local_rank=3))
    CliRunner().invoke(cli_reference.app, ["build", "recipes/quickstart.toml"])
    assert seen == {"local_rank": 3}
