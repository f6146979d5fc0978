"""Tiny FLUX.2 [klein] pieces for CPU tests: a chat-template tokenizer and generator configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from rdmx.recipe import validate_recipe
from rdmx.testing import registered_entry, tiny_tokenizer
from rdmx_flux2.plugin import rdmx_register_generators

# the shape of Qwen3's template: one user turn, generation prompt, thinking switched off
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant {% if enable_thinking is defined and not "
        "enable_thinking %}<think> </think> {% endif %}{% endif %}")
PROMPTS = ("a red cube on a table", "a blue ball", "two green cats", "a black boat at sea", "a red cube on a table")
ENTRY = registered_entry(rdmx_register_generators, "rdmx-flux2", kind="generators")


def tokenizer(directory: Path, extra=()) -> Path:
    return tiny_tokenizer(directory, [*PROMPTS, *extra], chat_template=CHAT)


def tiny_config(tmp_path: Path, **kw) -> dict:
    """A float32 tiny generator (64 px, 16 × 4 × 4 latents, 12-token prompts) caching under tmp_path."""
    tok = tmp_path / "tok"
    if not tok.is_dir():
        tokenizer(tok)
    return {"tiny": True, "resolution": 64, "ctx_len": 12, "autocast": "none", "vae_dtype": "float32",
            "tokenizer": str(tok), "cache_dir": str(tmp_path / "cache"), "text_device": "cpu", **kw}


CAPTIONS = [f"a {c} {t}" for c in ("red", "blue", "green") for t in ("cube", "ball", "cat", "boat")]


def make_workspace(root: Path) -> Path:
    """A captioned image folder ``root/images`` (24 images, 12 captions x 2 with their index) and
    ``root/caps.jsonl``, a Qwen3 and a SigLIP2 tokenizer."""
    rng = np.random.default_rng(0)
    rows = []
    (root / "images").mkdir()
    for i, cap in enumerate(CAPTIONS * 2):
        a = rng.integers(0, 180, (24, 24, 3)) + 70 * (i % 3 == 0)
        Image.fromarray(a.astype(np.uint8)).save(root / "images" / f"{i:02d}.png")
        rows.append({"file": f"{i:02d}.png", "caption": f"{cap} {i}"})
    (root / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    texts = [r["caption"] for r in rows]
    tokenizer(root / "qwen-tok", extra=texts)
    tiny_tokenizer(root / "siglip-tok", texts)
    return root


def t2i_recipe(root: Path, metrics=(), **train):
    """The text-to-image recipe on tiny pieces: captioned data, flux2-klein, text-joint mmd-nystrom."""
    raw = {
        "name": "t2i-tiny", "seed": 0,
        "data": {"name": "captioned-images", "path": str(root / "images"), "captions": str(root / "caps.jsonl"), "size": 24,
                 "val_count": 6},
        "generator": {"name": "flux2-klein", "tiny": True, "resolution": 64, "ctx_len": 12, "autocast": "none",
                      "vae_dtype": "float32", "tokenizer": str(root / "qwen-tok"), "cache_dir": str(root / "cache"),
                      "text_device": "cpu"},
        "estimator": {"name": "mmd-nystrom", "landmarks": 6, "kmeans_iters": 3, "sigma_scale": 0.25},
        "joint": {"kind": "text", "s_txt": 1.0,
                  "text_encoder": {"name": "siglip2-text", "tiny": True, "tokenizer": str(root / "siglip-tok")}},
        "battery": {"encoders": [
            {"name": "toy-conv", "label": "a", "seed": 1, "channels": 3, "resolution": 16, "dim": 8, "width": 4},
            {"name": "toy-conv", "label": "b", "seed": 2, "channels": 3, "resolution": 16, "dim": 8, "width": 4,
             "pooling": "max"},
            {"name": "toy-conv", "label": "held", "seed": 3, "channels": 3, "resolution": 16, "dim": 8, "width": 4,
             "role": "heldout"}]},
        "train": {"steps": 1, "batch": 8, "micro_batch": 8, "lr": 1e-3, "device": "cpu", **train},
        "eval": {"n": 8, "directions": 16, "metrics": list(metrics)},
        "reference": {"cache_dir": str(root / "cache"), "floor_draws": 2, "floor_rows": 4},
        "tracking": {"backend": "none"},
    }
    return validate_recipe(raw, "t2i-test")
