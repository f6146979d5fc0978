"""Evaluating and exporting a text-to-image run on tiny FLUX.2 classes: PickScore on a prompt set
with win rates over a baseline, text-joint SW_r / MMDr, GenEval's folder layout, teacher renders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flux2_tiny import make_workspace, t2i_recipe
from rdmx.checkpoints import BASE, evaluate_checkpoint, geneval_checkpoint, load_generator
from rdmx.errors import RdmxError
from rdmx.evaluate.joint import text_joint_sets
from rdmx.evaluate.suite import evaluate_features
from rdmx.samples import GENEVAL_SEED_BASE, seeded_noise
from rdmx.train.evaluation import EVAL_NOISE_SALT
from rdmx.train.loop import Trainer
from rdmx.train.sampling import generate
from rdmx_pickscore.testing import save_tiny_pickscore

PROMPTS = ["a red cube 0", "a blue boat 7", "a green cat 2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step run (tiny FLUX.2, tiny PickScore in the recipe's metrics) and its checkpoint."""
    root = make_workspace(tmp_path_factory.mktemp("t2i-eval"))
    model, processor = save_tiny_pickscore(root / "pickscore")
    metric = {"name": "pickscore", "model": str(model), "processor": str(processor), "device": "cpu", "batch_size": 4}
    resolved = t2i_recipe(root, metrics=[metric], steps=2, micro_batch=4, lr=0.05)
    Trainer(resolved, root / "run", progress=False).run(resume=False)
    return root, resolved, root / "run" / "checkpoints" / "step-000002"


def test_prompt_set_pickscore_win_rate_over_a_baseline(run):
    root, resolved, ckpt = run
    res = evaluate_checkpoint(resolved, ckpt, prompts=PROMPTS, per_prompt=2, baseline=BASE, log=False,
                              progress=False)
    s = res.summary
    assert res.settings["prompts"] == {"count": 3, "per_prompt": 2} and res.settings["baseline"] == BASE
    assert {"pickscore", "pickscore_reference", "pickscore_win_rate"} <= set(s)
    assert s["pickscore"] != s["pickscore_reference"]  # trained weights vs the base generator
    # brute force: the same six samples (every prompt twice, the eval noise) scored against their prompts
    comp, _ = load_generator(resolved, ckpt)
    comp.generator.set_prompts(PROMPTS)
    cond = torch.arange(3).repeat_interleave(2)
    images, _ = generate(comp.generator, 6, resolved.recipe.eval.seed + EVAL_NOISE_SALT, 4, comp.device, cond=cond)
    scores = comp.metrics[0].scorer.score(images, [PROMPTS[i] for i in cond.tolist()])
    assert s["pickscore"] == pytest.approx(float(scores.double().mean()), rel=1e-5)
    # the base generator at two Euler steps (a separately built baseline: the teacher's role)
    two = evaluate_checkpoint(resolved, ckpt, prompts=PROMPTS, per_prompt=2, baseline=BASE, log=False,
                              progress=False, baseline_set=["generator.steps=2"])
    assert two.settings["baseline"] == "base [generator.steps=2]" and two.summary["pickscore"] == s["pickscore"]
    assert two.summary["pickscore_reference"] != pytest.approx(s["pickscore_reference"], rel=1e-6)
    # against itself: identical noise and prompts, identical images -> equal means, no wins
    same = evaluate_checkpoint(resolved, ckpt, prompts=PROMPTS, per_prompt=2, baseline=ckpt, log=False,
                               progress=False).summary
    assert same["pickscore"] == same["pickscore_reference"] and same["pickscore_win_rate"] == 0.0


def test_text_joint_sw_and_mmdr_pair_rows_with_their_texts(run):
    root, resolved, ckpt = run
    res = evaluate_checkpoint(resolved, ckpt, n=8, log=False, progress=False)
    assert {"sw_rK_text", "sw_rK_text_train", "sw_rK_text_heldout", "mmd_r_text"} <= set(res.summary)
    # recompute: generated rows with their prompts embedded afresh, bank rows with their own captions
    comp, _ = load_generator(resolved, ckpt)
    e = resolved.recipe.eval
    images, cond = generate(comp.generator, 8, e.seed + EVAL_NOISE_SALT, 8, comp.device)
    from rdmx.reference.build import build_references

    refs = build_references(comp.data, comp.encoders, None, cache_dir=resolved.recipe.reference.cache_dir,
                            train_names=[], floors=None, eval_rows=8, seed=resolved.recipe.seed, progress=False)
    with torch.no_grad():
        feats = {k: enc(images) for k, enc in comp.encoders.items()}
        gen_tau = comp.text_encoder([comp.generator.prompts[i] for i in cond.tolist()])
        caps = comp.data.captions
        tau = {s: {k: comp.text_encoder([caps[s][i] for i in getattr(refs[k], f"{s}_bank_labels").tolist()])
                   for k in feats} for s in ("train", "val")}
    g, t, v, w = text_joint_sets(feats, {k: refs[k].train_bank for k in feats}, {k: refs[k].val_bank for k in feats},
                                 gen_tau, tau["train"], tau["val"], sigma_scale=0.25, s_txt=1.0, seed=e.seed)
    want = evaluate_features(g, t, v, comp.roles, n=8, directions=e.directions, seed=e.seed, metrics=("sw", "mmdr"))
    for enc in feats:
        assert res.encoders[enc]["text_weight"] == pytest.approx(w[enc])
        assert res.encoders[enc]["sw_r_text"] == pytest.approx(want.encoders[enc]["sw_r"], rel=1e-4)
        assert res.encoders[enc]["mmd_r_text"] == pytest.approx(want.encoders[enc]["mmd_r"], rel=1e-3)
    assert res.summary["sw_rK_text"] != pytest.approx(res.summary["sw_rK"])


def test_geneval_folder_layout_with_the_release_seeds(run, tmp_path):
    root, resolved, ckpt = run
    meta = [{"tag": "single_object", "include": [{"class": "cube", "count": 1}], "prompt": "a red cube 0"},
            {"tag": "colors", "include": [{"class": "boat", "count": 1, "color": "blue"}], "prompt": "a blue boat 7"}]
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in meta))
    out = geneval_checkpoint(resolved, ckpt, path, out=tmp_path / "geneval", per_prompt=3)
    assert sorted(p.name for p in out.iterdir()) == ["00000", "00001", "geneval_protocol.json"]
    protocol = json.loads((out / "geneval_protocol.json").read_text())
    gen = protocol["generation"]
    assert (gen["prompts"], gen["samples_per_prompt"], gen["images"]) == (2, 3, 6)
    assert gen["checkpoint"] == str(ckpt) and gen["weights"] == "raw"
    assert gen["generator"] == resolved.to_dict()["generator"] and str(GENEVAL_SEED_BASE) in gen["noise_seed"]
    assert protocol["scorer"]["options"] == "--options model=mask2former"
    for i, m in enumerate(meta):
        folder = out / f"{i:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == m
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    from PIL import Image

    comp, _ = load_generator(resolved, ckpt)
    comp.generator.set_prompts([m["prompt"] for m in meta])
    with torch.no_grad():
        want = comp.generator(seeded_noise(comp.generator.noise_shape, [GENEVAL_SEED_BASE + 100 + 2], "cpu"),
                              torch.tensor([1]))
    got = torch.from_numpy(np.array(Image.open(out / "00001" / "samples" / "0002.png"))).float() / 255
    assert (got.permute(2, 0, 1) - want[0]).abs().max() <= 1 / 255 + 1e-6
    stamp = (out / "00000" / "samples" / "0000.png").stat().st_mtime_ns
    geneval_checkpoint(resolved, ckpt, path, out=tmp_path / "geneval", per_prompt=3)  # complete: skipped
    assert (out / "00000" / "samples" / "0000.png").stat().st_mtime_ns == stamp


def test_teacher_renders_keep_the_best_seeds_as_captioned_data(run, tmp_path):
    from rdmx.data.captions import captioned_folder
    from rdmx.render import render_reference, render_seed

    root, resolved, _ = run
    comp, _ = load_generator(resolved, BASE)
    brightness = lambda images, prompts: images.mean((1, 2, 3))  # noqa: E731 - a stand-in scorer
    path = render_reference(comp.generator, PROMPTS, tmp_path / "ref", score=brightness, seeds=4, keep=2, batch=3,
                            progress=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["prompt_index"] for r in rows] == [0, 0, 1, 1, 2, 2]
    for i in range(3):
        noise = seeded_noise(comp.generator.noise_shape, [render_seed(i, s) for s in range(4)], "cpu")
        with torch.no_grad():
            means = comp.generator(noise, torch.full((4,), i)).mean((1, 2, 3))
        assert [r["seed"] for r in rows if r["prompt_index"] == i] == torch.argsort(means, descending=True)[:2].tolist()
    data = captioned_folder(tmp_path / "ref", path, size=16, val_count=2)
    assert sorted(data.captions["train"] + data.captions["val"]) == sorted(p for p in PROMPTS for _ in range(2))
    render_reference(comp.generator, PROMPTS, tmp_path / "ref", score=brightness, seeds=4, keep=2, progress=False)
    assert len(path.read_text().splitlines()) == 6  # finished prompts are not rendered again


def test_pickscore_with_the_releases_context_length_is_an_evaluation_option(run):
    """The release scores PickScore with the student's prompts encoded at 232 tokens (its PickScore
    protocol), not the 48 it trained with: `--set-eval generator.ctx_len=...` evaluates the same
    checkpoint so, recorded in eval.json, and matches the scorer run directly on those images."""
    from rdmx.recipe import with_overrides

    root, resolved, ckpt = run
    long = evaluate_checkpoint(resolved, ckpt, prompts=PROMPTS, per_prompt=2, log=False, progress=False,
                               eval_set=["generator.ctx_len=16"])
    short = evaluate_checkpoint(resolved, ckpt, prompts=PROMPTS, per_prompt=2, log=False, progress=False)
    assert long.settings["eval_set"] == ["generator.ctx_len=16"] and "eval_set" not in short.settings
    assert long.summary["pickscore"] != pytest.approx(short.summary["pickscore"], rel=1e-7)
    # brute force: the generator built at ctx_len 16 with the checkpoint's weights, scored directly
    comp, _ = load_generator(with_overrides(resolved, ["generator.ctx_len=16"]), None)
    from rdmx.checkpoints import apply_checkpoint

    apply_checkpoint(comp, ckpt, resolved)
    comp.generator.set_prompts(PROMPTS)
    assert comp.generator.states.shape[1] == comp.generator.transformer.config.joint_attention_dim
    cond = torch.arange(3).repeat_interleave(2)
    images, _ = generate(comp.generator, 6, resolved.recipe.eval.seed + EVAL_NOISE_SALT, 4, comp.device, cond=cond)
    scores = comp.metrics[0].scorer.score(images, [PROMPTS[i] for i in cond.tolist()])
    assert long.summary["pickscore"] == pytest.approx(float(scores.double().mean()), rel=1e-5)
    # a length the tiny Qwen3 (256 positions) cannot take: one line naming the setting
    with pytest.raises(RdmxError, match=r"generator.ctx_len = 300 prompt tokens, but the text encoder takes at most 256"):
        evaluate_checkpoint(resolved, ckpt, prompts=PROMPTS, per_prompt=1, log=False, progress=False,
                            eval_set=["generator.ctx_len=300"])
