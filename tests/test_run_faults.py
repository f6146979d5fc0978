"""Faults at run time name their source: a run whose every step is non-finite stops after
train.max_consecutive_skips steps with the cause, instead of finishing untrained with exit status
0; features cached by earlier code name the encoder."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from rdmx.errors import RdmxError
from rdmx.files import read_sealed_json, write_sealed_json
from rdmx.reference.extract import MANIFEST, extract_features
from rdmx.testing import tiny_conv
from rdmx.train.loop import Trainer
from tests.test_engine import tiny


def test_consecutive_non_finite_steps_stop_the_run(tmp_path):
    r = tiny(tmp_path, "train.steps=6", "train.max_consecutive_skips=2")
    trainer = Trainer(r, tmp_path / "o", progress=False)
    est = trainer.c.estimator
    original = est.loss

    def broken(gen, ref, cond=None, *, generator=None):
        value = original(gen, ref, cond, generator=generator)
        return value * float("nan") if gen.requires_grad else value  # floors stay finite

    est.loss = broken
    with pytest.raises(RdmxError) as exc:
        trainer.run(resume=False)
    msg = str(exc.value)
    assert "training stopped at step 2: 2 consecutive steps had a non-finite loss" in msg
    assert "the mmd-nystrom loss is non-finite for encoder(s) conv-a, conv-b, pixels" in msg
    assert len(trainer.state.history) == 1 and not (tmp_path / "o" / "summary.json").exists()


def test_zero_means_never_stop(tmp_path):
    r = tiny(tmp_path, "train.steps=3", "train.max_consecutive_skips=0")
    trainer = Trainer(r, tmp_path / "o", progress=False)
    est = trainer.c.estimator
    original = est.loss
    est.loss = lambda gen, ref, cond=None, *, generator=None: (
        original(gen, ref, cond, generator=generator) * (float("nan") if gen.requires_grad else 1.0))
    summary = trainer.run(resume=False)
    assert summary["skipped_steps"] == 3


def test_features_cached_by_earlier_code_name_the_encoder(tmp_path):
    """A cache directory whose rows or dim disagree with today's encoder of the same fingerprint
    (code changed, preset_version not bumped) is refused naming the encoder and the fix."""
    data = TensorDataset(torch.rand(7, 3, 12, 12), torch.zeros(7, dtype=torch.long))
    enc = tiny_conv(0, 6, width=4)
    (d,) = extract_features({"small": enc}, data, cache_dir=tmp_path, data_fingerprint="d", split="train",
                            progress=False).values()
    manifest = read_sealed_json(d / MANIFEST)
    write_sealed_json(d / MANIFEST, {**manifest, "dim": 5, "complete": False})  # as older code left it
    with pytest.raises(RdmxError) as exc:
        extract_features({"small": enc}, data, cache_dir=tmp_path, data_fingerprint="d", split="train",
                         progress=False)
    msg = str(exc.value)
    assert msg.startswith("encoder 'small' (tiny0, fingerprint ") and "cached by earlier code" in msg
    assert "bump EncoderSpec.preset_version" in msg
