"""Class-prompt PickScore (the paper's Fig. 6): every class of a class-conditional generator sampled
--per-prompt times, each image scored against "a photo of a {class}", and the win rate over the
warm start from the same noise — against the scorer run directly and a hand count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rdmx.checkpoints import BASE, evaluate_checkpoint, load_generator
from rdmx.data.prompts import class_prompts, imagenet_class_names
from rdmx.errors import RdmxError
from rdmx.train.evaluation import EVAL_NOISE_SALT
from rdmx.train.loop import Trainer
from rdmx.train.sampling import generate
from rdmx.recipe import load_recipe
from rdmx_pickscore.plugin import PickScoreConfig
from rdmx_pickscore.scorer import load_scorer
from rdmx_pickscore.testing import save_tiny_pickscore

QUICKSTART = Path(__file__).resolve().parents[3] / "recipes" / "quickstart.toml"
TINY = ["train.batch=40", "train.micro_batch=20", "eval.n=40", "eval.directions=16", "estimator.landmarks=16",
        "data.image_size=16", "battery.encoders[0].resolution=16", "battery.encoders[1].resolution=16",
        "battery.encoders[3].resolution=16", "battery.encoders[4].resolution=16", "battery.encoders[2].resolution=8",
        "train.sample_every=0", "reference.floor_rows=32", 'tracking.backend="none"']


def tiny(tmp_path, *extra):
    return load_recipe(QUICKSTART, [*TINY, f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}", *extra])


def test_imagenet_names_are_torchvisions_in_class_id_order():
    names = imagenet_class_names()
    assert len(names) == 1000 and (names[0], names[1], names[999]) == ("tench", "goldfish", "toilet tissue")
    prompts, source = class_prompts("a photo of a {class}", 1000)
    assert prompts[1] == "a photo of a goldfish" and "torchvision" in source
    assert class_prompts("{class}!", 3, ("a", "b", "c"))[0] == ["a!", "b!", "c!"]
    with pytest.raises(RdmxError, match="needs '\\{class\\}'"):
        class_prompts("a photo", 1000)
    with pytest.raises(RdmxError, match="has 5 classes and the data names 3"):
        class_prompts("{class}", 5, ("a", "b", "c"))
    with pytest.raises(RdmxError, match="needs a class-conditional generator"):
        class_prompts("{class}", 0)


def test_class_prompt_pickscore_and_win_rate_over_the_warm_start(tmp_path):
    model, processor = save_tiny_pickscore(tmp_path / "pickscore")
    metric = (f'{{name = "pickscore", model = {json.dumps(str(model))}, processor = {json.dumps(str(processor))}, '
              f'device = "cpu", batch_size = 8}}')
    resolved = tiny(tmp_path, "train.steps=2", "train.lr=0.05")
    Trainer(resolved, tmp_path / "run", progress=False).run(resume=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    # PickScore as an evaluation-time metric of the trained run (as Fig. 6 scores the ImageNet run)
    eval_set = [f"eval.metrics=[{metric}]"]
    res = evaluate_checkpoint(resolved, ckpt, class_prompts="a photo of a {class}", per_prompt=2, baseline=BASE,
                              log=False, progress=False, out=tmp_path / "ev", eval_set=eval_set)
    comp, _ = load_generator(resolved, ckpt)
    texts = [f"a photo of a {name}" for name in comp.info.class_names]
    assert len(texts) == 10
    assert res.settings["class_prompts"] == {"template": "a photo of a {class}", "classes": 10, "per_class": 2,
                                             "names": "the data's class names"}
    # brute force: the same 20 samples (every class twice, the evaluation noise), scored directly
    cond = torch.arange(10).repeat_interleave(2)
    seed = resolved.recipe.eval.seed + EVAL_NOISE_SALT
    images, _ = generate(comp.generator, 20, seed, 8, comp.device, cond=cond)
    base, _ = load_generator(resolved, BASE)
    base_images, _ = generate(base.generator, 20, seed, 8, base.device, cond=cond)
    scorer = load_scorer(PickScoreConfig(model=str(model), processor=str(processor), device="cpu"))
    prompts = [texts[i] for i in cond.tolist()]
    mine, theirs = scorer.score(images, prompts).double(), scorer.score(base_images, prompts).double()
    assert res.summary["pickscore"] == pytest.approx(float(mine.mean()), rel=1e-6)
    assert res.summary["pickscore_reference"] == pytest.approx(float(theirs.mean()), rel=1e-6)
    wins = sum(1 for a, b in zip(mine.tolist(), theirs.tolist(), strict=True) if a > b)  # ties are losses
    assert res.summary["pickscore_win_rate"] == wins / 20
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["settings"]["class_prompts"]["per_class"] == 2
