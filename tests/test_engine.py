"""The training engine end to end on tiny settings: summary, MLflow, resume, non-finite steps."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rdmx.recipe import load_recipe
from rdmx.train.loop import Trainer
from tests.helpers import ROOT, killed_after_checkpoint, rdmx

QUICK = ROOT / "recipes" / "quickstart.toml"
TINY = [
    "train.steps=4", "train.batch=48", "train.micro_batch=16", "eval.n=64", "eval.directions=32",
    "estimator.landmarks=32", "data.image_size=16", "battery.encoders[0].resolution=16",
    "battery.encoders[1].resolution=16", "battery.encoders[3].resolution=16",
    "battery.encoders[4].resolution=16", "battery.encoders[2].resolution=8", "train.sample_every=0",
    "reference.floor_rows=64",
]


def tiny(tmp_path, *extra):
    return load_recipe(QUICK, [*TINY, f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
                               "tracking.backend=none", *extra])


def params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.c.generator.parameters()])


def test_cli_run_writes_summary_mlflow_run_and_grid(tmp_path):
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    res = rdmx("run", str(QUICK), *sum((["--set", s] for s in TINY), []), "--set",
               f"reference.cache_dir={json.dumps(str(cache))}", "--set", "tracking.experiment=\"t\"",
               "--out", str(out), "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["fingerprint"]
    assert summary["run_id"] and summary["wall_time_s"] > 0
    assert "eval/sw_rK_heldout" in summary["initial"] and "eval/sw_rK_heldout" in summary["final"]
    assert (out / "samples" / "step-000004.png").is_file()
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["run_id"])
    assert run.data.params["train.batch"] == "48"
    assert run.data.params["battery.encoders.0.name"] == "toy-conv"
    assert "raw/conv-a" in run.data.metrics and "weight/pixels" in run.data.metrics
    assert "eval/sw_rK_heldout" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"recipe.resolved.toml", "plugins.json", "samples"} <= arts
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 4


def test_dry_run_builds_without_training(tmp_path):
    res = rdmx("run", str(QUICK), "--dry-run", "--set", "train.steps=1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dry run" in res.stdout and "encoder 'heldout-conv-c' (toy-conv, plugin builtin.toys) [heldout]" in res.stdout
    assert not (tmp_path / "runs").exists()


def test_same_seed_same_result_and_killed_run_resumes_identically(tmp_path):
    r = tiny(tmp_path, "train.checkpoint_every=2", "train.steps=5")
    straight = Trainer(r, tmp_path / "a", progress=False)
    straight.run(resume=False)

    with pytest.raises(KeyboardInterrupt):
        killed_after_checkpoint(2)(r, tmp_path / "b", progress=False).run(resume=False)
    resumed = Trainer(r, tmp_path / "b", progress=False)
    summary = resumed.run(resume=True)
    assert summary["steps"] == 5
    assert torch.equal(params(straight), params(resumed))
    again = Trainer(r, tmp_path / "c", progress=False)
    again.run(resume=False)
    assert torch.equal(params(straight), params(again))


def test_non_finite_loss_skips_the_step(tmp_path):
    r = tiny(tmp_path, "train.steps=3")
    trainer = Trainer(r, tmp_path / "o", progress=False)
    est = trainer.c.estimator
    original = est.loss
    calls = {"n": 0}

    def flaky(gen, ref, cond=None, *, generator=None):
        value = original(gen, ref, cond, generator=generator)
        if not gen.requires_grad:  # floors and other no-grad uses stay finite
            return value
        calls["n"] += 1
        return value * float("nan") if calls["n"] <= 3 else value  # first step: every encoder NaN

    est.loss = flaky
    summary = trainer.run(resume=False)
    assert summary["skipped_steps"] == 1
    assert math.isnan(trainer.state.history[0]["grad_norm"])
    assert all(math.isfinite(h["grad_norm"]) for h in trainer.state.history[1:])


def test_checkpoint_of_another_recipe_is_refused(tmp_path):
    r = tiny(tmp_path, "train.steps=1")
    Trainer(r, tmp_path / "o", progress=False).run(resume=False)
    other = tiny(tmp_path, "train.steps=1", "train.lr=0.5")
    from rdmx.errors import RdmxError

    with pytest.raises(RdmxError, match="fingerprint"):
        Trainer(other, tmp_path / "o", progress=False).run(resume=True)


def test_balancer_weights_of_each_step_reach_the_loss(tmp_path):
    """λ returned by the balancer after step 1 is what step 2's gradient uses (here: all zero)."""
    from rdmx.represent.balancers import UniformBalancer

    class ZeroAfterFirst(UniformBalancer):
        def _next_weights(self, scores):
            return {n: 0.0 for n in self.names}

    r = tiny(tmp_path, "train.steps=2")
    trainer = Trainer(r, tmp_path / "o", progress=False)
    trainer.c.balancer = ZeroAfterFirst(trainer.c.train_names)
    trainer.run(resume=False)
    h = trainer.state.history
    assert h[0]["grad_norm"] > 0 and h[0]["weight/conv-a"] == 1.0
    assert h[1]["grad_norm"] == 0.0 and h[1]["weight/conv-a"] == 0.0
