"""The text-to-image run end to end on tiny FLUX.2 classes: captioned data, the text-joint
reference, gradient-cached steps through the VAE decoder, and a loss that reads the captions."""

from __future__ import annotations

import json

import pytest
import torch

from flux2_tiny import make_workspace, t2i_recipe as recipe
from rdmx.train.loop import Trainer

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("t2i"))


def gradient(trainer):
    trainer.c.generator.zero_grad(set_to_none=True)
    res = trainer.compute_gradient(0)
    params = trainer.c.generator.transformer.parameters()
    return res, torch.cat([p.grad.flatten() for p in params])


@pytest.fixture(scope="module")
def trainer(workspace):
    t = Trainer(recipe(workspace), workspace / "runs-direct", progress=False)
    t.prepare_references()
    return t


def test_prompt_pool_is_the_train_captions_and_the_reference_is_text_joint(trainer):
    assert trainer.c.info.prompts == trainer.c.data.captions["train"]
    ref = trainer.refs["a"].reference
    assert ref.joint["kind"] == "text" and ref.cond_dim == trainer.c.text_encoder.dim
    assert ref.joint["weight"] == pytest.approx(ref.sigma)  # β = σ_img / s_txt with s_txt = 1


def test_gradient_cached_step_reaches_the_transformer_through_the_vae(workspace):
    """Chunks of 2 (gradient caching) and one batch of 8 give the same gradient: in float64 to 1e-10."""
    grads, losses = [], []
    for micro in (8, 2):
        t = Trainer(recipe(workspace, micro_batch=micro), workspace / f"runs-{micro}", progress=False)
        t.prepare_references()
        t.c.generator.double()
        for enc in t.c.encoders.values():
            enc.double()
        res, g = gradient(t)
        grads.append(g)
        losses.append(float(res.loss))
        assert all(p.grad is None for p in t.c.generator.vae.parameters())  # frozen decoder, in the graph
    assert grads[0].abs().sum() > 0 and torch.isfinite(grads[0]).all()
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-10
    assert losses[1] == pytest.approx(losses[0], rel=1e-12)


def test_the_text_joint_loss_reads_each_rows_prompt(trainer):
    direct = trainer
    t = direct.recipe.train
    gen = direct.c.generator
    g = torch.Generator()
    g.manual_seed((direct.recipe.seed * 1_000_003) % (2**63 - 1))  # step 0's draw (rdmx.train.loop.step_generator)
    noise = gen.sample_noise(t.batch, g)
    ids = gen.sample_conditions(t.batch, g)
    with torch.no_grad():
        feats = direct.c.encoders["a"](gen(noise, ids))
    tau = direct.c.text_encoder([direct.c.info.prompts[i] for i in ids.tolist()])  # the prompts, embedded afresh
    ref = direct.refs["a"].reference
    want = direct.c.estimator.loss(feats, ref, tau)
    res, _ = gradient(direct)
    assert float(res.raws["a"]) == pytest.approx(float(want), rel=1e-4)
    other = direct.c.estimator.loss(feats, ref, tau.roll(1, 0))  # the same images with other prompts
    assert abs(float(other) - float(want)) > 1e-3 * abs(float(want))


def test_a_short_run_trains_evaluates_samples_and_checkpoints(workspace):
    trainer = Trainer(recipe(workspace, steps=2, micro_batch=4, sample_every=2, checkpoint_every=1,
                             keep_checkpoints=True), workspace / "run", progress=False)
    summary = trainer.run(resume=False)
    from rdmx.train.checkpoint import open_checkpoint

    milestone = open_checkpoint(workspace / "run" / "checkpoints" / "step-000001", trainer.resolved.fingerprint)
    assert milestone.step == 1 and milestone.keys == ["generator"]  # a milestone keeps the weights only
    assert "transformer.proj_out.weight" in milestone.tensor_shapes("generator")
    assert open_checkpoint(workspace / "run").keys == ["generator", "optimizer"]  # the newest is whole
    assert (workspace / "run" / "samples" / "step-000002.png").is_file()
    assert "eval/sw_rK_heldout" in summary["final"]
    assert summary["skipped_steps"] == 0


def test_rdmx_reference_build_accepts_the_text_joint_law(workspace, trainer):
    from typer.testing import CliRunner

    from rdmx.cli import app
    from rdmx.tomlwrite import dumps

    path = workspace / "t2i.toml"
    path.write_text(dumps(recipe(workspace).to_dict()))
    res = CliRunner().invoke(app, ["reference", "build", str(path), "--json", "--no-progress", "--workers", "0"])
    assert res.exit_code == 0, res.output
    rows = {r["encoder"]: r for r in json.loads(res.output[res.output.index("["):])}
    assert rows["a"]["sigma"] == pytest.approx(trainer.refs["a"].reference.sigma) and rows["held"]["floor"] is None
