"""The engine at GPU scale, on CPU: ``train.micro_batch = "auto"`` under an injected memory
budget, out-of-memory errors as one message naming the setting, and ``eval.chunk``."""

from __future__ import annotations

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.train.loop import Trainer
from rdmx.train.memory import SavedTensorMeter
from rdmx.train.micro_batch import divisors_desc, find_micro_batch, probe_chunk
from tests.test_engine import tiny


def _grad(trainer):
    trainer.c.generator.zero_grad(set_to_none=True)
    trainer.compute_gradient(0)
    return torch.cat([p.grad.flatten() for p in trainer.c.generator.parameters()])


def test_divisors_and_search_order():
    assert divisors_desc(48) == [48, 24, 16, 12, 8, 6, 4, 3, 2, 1]
    assert divisors_desc(7) == [7, 1]
    seen = []

    def fits(m):
        seen.append(m)
        if m > 12:
            raise torch.OutOfMemoryError("simulated")
        return m <= 8

    logs = []
    assert find_micro_batch(fits, 48, logs.append) == 8
    assert seen == [48, 24, 16, 12, 8] and "24, 16, 12" in logs[0]
    with pytest.raises(RdmxError, match="not even a chunk of 1"):
        find_micro_batch(lambda m: False, 6, logs.append)


def test_auto_micro_batch_is_the_largest_divisor_within_the_budget(tmp_path):
    """The saved activations of each candidate chunk are measured independently; under a budget
    between those of 16 and 24 rows the probe picks 16 of N = 48 (3 chunks, N exact) and the step's
    gradient is the explicit micro batch 16's, bit for bit."""
    auto = Trainer(tiny(tmp_path, 'train.micro_batch="auto"', "train.steps=1"), tmp_path / "a", progress=False)
    gen = auto.c.generator
    encs = {k: auto.c.encoders[k] for k in auto.c.train_names}
    peaks = {}
    for m in (24, 16):
        with SavedTensorMeter({"generator": gen, **encs}) as meter:
            probe_chunk(gen, encs, m, auto.c.device)
        peaks[m] = meter.peak
    assert peaks[16] < peaks[24]
    auto.probe_budget = (peaks[16] + peaks[24]) // 2
    assert auto.micro_batch == 16 and auto.accumulation == 3
    assert all(p.grad is None for p in gen.parameters())  # the probe leaves no gradient behind
    auto.prepare_references()
    fixed = Trainer(tiny(tmp_path, "train.micro_batch=16", "train.steps=1"), tmp_path / "b", progress=False)
    fixed.prepare_references()
    assert torch.equal(_grad(auto), _grad(fixed))


def test_out_of_memory_is_one_message_naming_the_setting(tmp_path):
    trainer = Trainer(tiny(tmp_path, "train.steps=2"), tmp_path / "o", progress=False)
    gen = trainer.c.generator
    original = gen.forward
    state = {"calls": 0, "when": "train"}

    def forward(noise, cond=None):
        grad = torch.is_grad_enabled()
        if (state["when"] == "train" and grad) or (state["when"] == "eval" and not grad and noise.shape[0] > 16):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(noise, cond)

    gen.forward = forward
    with pytest.raises(RdmxError, match=r"training step 0: lower train\.micro_batch \(now 16\) or set"):
        trainer.run(resume=False)
    state["when"] = "eval"  # evaluation chunks: 4 × the micro batch by default
    with pytest.raises(RdmxError, match=r"evaluation at step 0: lower eval\.chunk \(now 64\)"):
        Trainer(tiny(tmp_path, "train.steps=2"), tmp_path / "p", progress=False,
                components=trainer.c).run(resume=False)


def test_eval_chunk_sets_the_evaluation_batches_without_gradients(tmp_path):
    sizes = {}
    results = {}
    for chunk in (0, 24):
        trainer = Trainer(tiny(tmp_path, "train.steps=0", f"eval.chunk={chunk}"), tmp_path / f"c{chunk}",
                          progress=False)
        calls = sizes[chunk] = []
        trainer.c.generator.register_forward_hook(
            lambda m, a, o, calls=calls: calls.append((a[0].shape[0], torch.is_grad_enabled())))
        trainer.prepare_references()
        results[chunk] = trainer.evaluate(0)
    assert sizes[0] == [(64, False)] and trainer.eval_chunk == 24  # eval.n = 64 in one chunk of 4 × 16
    assert sizes[24] == [(24, False), (24, False), (16, False)]
    for k, v in results[0].items():
        assert abs(results[24][k] - v) <= 1e-5 * abs(v) + 1e-7, k


def test_meter_counts_new_memory_only_not_parameters_or_their_views():
    """A frozen linear's input gradient needs only its weight: in bf16 it saves ``weight.t()`` (a view
    of the parameter, no new memory); with float32 weights under bf16 autocast it saves the bf16
    copy of the weight (new memory)."""
    lin = torch.nn.Linear(64, 32, bias=False).requires_grad_(False)
    x = torch.rand(8, 64, requires_grad=True)
    with SavedTensorMeter() as meter:
        lin.bfloat16()(x.bfloat16()).sum().backward()
    assert meter.peak == 0
    lin.float()
    with SavedTensorMeter() as meter, torch.autocast("cpu", dtype=torch.bfloat16):
        lin(x).sum().backward()
    assert meter.peak == 32 * 64 * 2
