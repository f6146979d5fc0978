"""A run whose every step is non-finite stops after train.max_consecutive_skips steps with the
cause named, instead of finishing untrained with exit status 0."""

from __future__ import annotations

import pytest

from rdmx.errors import RdmxError
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
