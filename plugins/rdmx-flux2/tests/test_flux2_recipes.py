"""recipes/irdm_flux2_klein*.toml: the paper's constants, and the one-GPU variant built on tiny pieces
from a COCO-format captions file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flux2_tiny import tokenizer
from rdmx.recipe import load_recipe, validate_recipe
from rdmx.testing import tiny_tokenizer
from rdmx.train.build import build_components
from rdmx_pickscore.testing import save_tiny_pickscore

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
TRAIN = {"inception", "convnext", "mae", "clip", "dinov3", "pe-core", "siglip2", "aimv2", "webssl", "dreamsim"}


def test_headline_recipe_carries_the_papers_constants():
    r = load_recipe(RECIPES / "irdm_flux2_klein.toml")
    roles = {e.name: e.role for e in r.recipe.battery.encoders}
    assert {n for n, v in roles.items() if v == "train"} == TRAIN and len(roles) == 14
    t = r.recipe.train
    assert (t.batch, t.micro_batch, t.batch // (t.micro_batch * 8)) == (10240, 8, 160)
    assert (t.lr, t.lr_schedule, t.betas, t.weight_decay, t.grad_clip) == (2.83e-6, "constant", (0.9, 0.95), 0.0, 4.0)
    assert (t.steps, t.checkpoint_every, t.keep_every, t.milestones) == (300, 20, 20, "weights")
    est = r.config("estimator")
    assert (est.landmarks, est.sigma_scale, est.kmeans_iters) == (8192, 0.25, 20)
    assert (r.recipe.joint.kind, r.recipe.joint.s_txt, r.recipe.joint.text_encoder.name) == ("text", 1.0, "siglip2-text")
    assert r.recipe.balancer.name == "uniform"
    gen = r.config("generator")
    assert (gen.resolution, gen.steps, gen.ctx_len, gen.text_layers) == (512, 1, 48, [9, 18, 27])
    assert (gen.autocast, gen.checkpoint_blocks) == ("bfloat16", True)
    pool = r.config("prompts")
    assert pool.repeat == [1, 32] and pool.path[0].endswith("captions_train2014.json")


def test_one_gpu_variant_builds_on_tiny_pieces(tmp_path):
    r = load_recipe(RECIPES / "irdm_flux2_klein_1gpu.toml")
    assert r.recipe.train.batch == 1024 and r.recipe.prompts is None  # prompts: the reference's captions
    rng = np.random.default_rng(0)
    coco = {}
    for split in ("train2014", "val2014"):
        (tmp_path / split).mkdir()
        ids = [3, 1, 2] if split == "train2014" else [9, 8]
        images = [{"id": i, "file_name": f"COCO_{split}_{i:012d}.png"} for i in ids]
        for im in images:
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / split / im["file_name"])
        notes = [{"image_id": i, "id": 10 * i + k, "caption": f"picture {i} caption {k}"} for i in ids for k in (0, 1)]
        coco[split] = tmp_path / f"captions_{split}.json"
        coco[split].write_text(json.dumps({"images": images, "annotations": notes}))
    texts = [f"picture {i} caption {k}" for i in range(10) for k in (0, 1)]
    raw = tomllib.loads((RECIPES / "irdm_flux2_klein_1gpu.toml").read_text())
    raw["data"].update(path=str(tmp_path / "train2014"), captions=str(coco["train2014"]), size=32,
                       val_path=str(tmp_path / "val2014"), val_captions=str(coco["val2014"]))
    raw["generator"].update(tiny=True, resolution=64, ctx_len=12, text_device="cpu", cache_dir=str(tmp_path / "c"),
                            tokenizer=str(tokenizer(tmp_path / "qwen", extra=texts)))
    raw["joint"]["text_encoder"].update(tiny=True, tokenizer=str(tiny_tokenizer(tmp_path / "sig", texts)))
    raw["battery"]["encoders"] = [{**e, "weights": "random", "tiny": True} for e in raw["battery"]["encoders"]]
    model, processor = save_tiny_pickscore(tmp_path / "pickscore")
    raw["eval"]["metrics"] = [{"name": "pickscore", "model": str(model), "processor": str(processor), "device": "cpu"}]
    c = build_components(validate_recipe(raw, "irdm_flux2_klein_1gpu (test)"))
    assert c.info.prompts == ("picture 1 caption 0", "picture 2 caption 0", "picture 3 caption 0")
    assert c.data.captions["val"] == ("picture 8 caption 0", "picture 9 caption 0")
    ids = c.generator.sample_conditions(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = c.generator(c.generator.sample_noise(2, torch.Generator().manual_seed(0)), ids)
        for name, enc in c.encoders.items():
            assert enc(x).shape[0] == 2, name
        assert c.text_encoder(list(c.info.prompts)).shape == (3, c.text_encoder.dim)


def test_plugin_is_torch_free_and_listed():
    import subprocess
    import sys
    from importlib import metadata

    code = "import sys, rdmx_flux2.plugin; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert [ep.value for ep in metadata.entry_points(group="rdmx") if ep.name == "flux2"] == ["rdmx_flux2.plugin"]
    listed = subprocess.run([sys.executable, "-m", "rdmx.cli", "list", "prompts", "--json"], capture_output=True,
                            text=True, check=True)
    assert [c["name"] for c in json.loads(listed.stdout)["components"]] == ["prompt-file"]
