"""Tiny FLUX.2 [klein] pieces for CPU tests: a chat-template tokenizer and generator configs."""

from __future__ import annotations

from pathlib import Path

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
