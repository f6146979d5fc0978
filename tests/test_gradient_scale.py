"""train.loss_scale: the effective gradient s·∇L never depends on the micro batch (or the world size,
see tests/test_distributed.py); the release's convention gives ∇L·b/N for a reference batch b."""

from __future__ import annotations

import pytest
import torch

from rdmx.errors import RecipeError
from rdmx.train.loop import Trainer
from tests.test_engine import tiny


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float32 summation order (chunked vs one pass)."""
    assert float((a - b).norm() / b.norm()) < 1e-5


def gradient(tmp_path, *sets) -> torch.Tensor:
    trainer = Trainer(tiny(tmp_path, "train.batch=64", *sets), tmp_path / "run", progress=False)
    trainer.prepare_references()
    trainer.c.generator.zero_grad(set_to_none=True)
    trainer.compute_gradient(0)
    return torch.cat([p.grad.flatten() for p in trainer.c.generator.parameters()])


def test_same_gradient_for_every_micro_batch_and_the_release_scale(tmp_path):
    plain = gradient(tmp_path, "train.micro_batch=0")  # loss_scale = 1.0: ∇L in one pass
    release = "train.loss_scale={ reference_micro_batch = 8 }"
    for micro in (8, 16, 32, 64):
        g = gradient(tmp_path, f"train.micro_batch={micro}", release)
        # ∇L · b / N with b = 8, N = 64, whatever chunking computed it
        close(g, plain * (8 / 64))
    close(gradient(tmp_path, "train.micro_batch=16", "train.loss_scale=0.25"), plain * 0.25)
    assert float((plain * 0.25 - plain * 0.125).norm() / plain.norm()) > 0.1  # the check can tell scales apart


def test_paper_convention_is_grad_over_640():
    from rdmx.recipe import load_recipe

    t = load_recipe("recipes/irdm_panel.toml").recipe.train
    assert t.batch == 5120 and t.gradient_scale() == pytest.approx(1 / 640)
    # the release's 8 per GPU × 8 GPUs × 80: the same number on any micro batch
    assert load_recipe("recipes/irdm_panel.toml", ["train.micro_batch=256"]).recipe.train.gradient_scale() == 1 / 640


def test_accumulation_is_refused_with_what_to_write(tmp_path):
    with pytest.raises(RecipeError) as err:
        tiny(tmp_path, 'train.loss_scale="accumulation"')
    msg = str(err.value)
    assert "train.loss_scale" in msg and "reference_micro_batch = 8" in msg and "GPU count" in msg
    with pytest.raises(RecipeError, match="must be finite and > 0"):
        tiny(tmp_path, "train.loss_scale=0")
    assert tiny(tmp_path, 'train.loss_scale="none"').recipe.train.gradient_scale() == 1.0
