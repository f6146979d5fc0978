"""The testing kit for rdmx and its plugins.

* :func:`check_encoder_contract` — the encoder contract as one call (``rdmx.testing.contract``).
* :func:`registered_entries` / :func:`registered_entry` — what a hook registers, validated
  exactly as at load time (config model, typed metadata), without installing the plugin.
* :func:`isolate_weight_caches` — empty Hugging Face / torch-hub caches for "weights missing"
  tests; :func:`tiny_conv` — a tiny counting conv encoder.
* A pytest plugin (entry point ``pytest11``: ``rdmx.testing.pytest_plugin``), active in every
  pytest session where rdmx is installed: the Hugging Face libraries run offline, and fixtures
  ``rdmx_offline_cache`` (empty weight caches), ``rdmx_plugins`` (a fresh plugin load) and
  ``rdmx_cache_dir`` (a reference cache folder) are available to plugin tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rdmx.registry import Entry, make_register
from rdmx.testing.contract import ContractError, check_encoder_contract

__all__ = ["ContractError", "check_encoder_contract", "registered_entries", "registered_entry",
           "isolate_weight_caches", "tiny_conv"]


def registered_entries(hook: Callable, plugin: str, kind: str = "encoders") -> dict[str, Entry]:
    """The entries one plugin hook registers (checked like at load time), by name."""
    staged: list[Entry] = []
    hook(make_register(kind, plugin, "0", staged))
    return {e.name: e for e in staged}


def registered_entry(hook: Callable, plugin: str, kind: str = "encoders", name: str | None = None) -> Entry:
    """One entry a plugin hook registers: ``name``, or the only/last one."""
    entries = registered_entries(hook, plugin, kind)
    return entries[name] if name is not None else list(entries.values())[-1]


def isolate_weight_caches(tmp_path: Path, monkeypatch) -> Path:
    """Point the Hugging Face, torch-hub and XDG caches at empty folders under ``tmp_path``."""
    for var in ("HF_HUB_CACHE", "RDMX_DREAMSIM_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def tiny_conv(seed: int, dim: int, width: int):
    """A tiny random conv encoder (3 → ``width`` → ``dim``, 12 px) that counts the images it encodes."""
    import torch

    from rdmx.represent.encoder import Encoder, EncoderSpec

    class TinyConv(Encoder):
        def __init__(self):
            super().__init__(EncoderSpec(name=f"tiny{seed}", family="test", checkpoint="tiny-conv", dim=dim,
                                         resolution=12, weights="random", seed=seed, dtype="float32",
                                         resize="bilinear", pooling="mean"))
            g = torch.Generator().manual_seed(seed)
            self.conv = torch.nn.Conv2d(3, width, 3)
            self.head = torch.nn.Linear(width, dim)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.rows_seen = 0  # rows extracted
            self.rows_checked = 0  # rows re-encoded by the cache's spot check (rdmx.reference.extract)
            self.freeze()

        def features(self, x):
            if getattr(self, "rdmx_spot_check", False):
                self.rows_checked += x.shape[0]
            else:
                self.rows_seen += x.shape[0]
            return self.head(torch.relu(self.conv(x)).mean((2, 3)))

    return TinyConv()


def tiny_tokenizer(directory: Path, texts, extra: tuple[str, ...] = (), chat_template: str | None = None) -> Path:
    """A word-level Hugging Face tokenizer (lower-cased, one id per word of ``texts``) saved in
    ``directory``: lets tiny random text towers encode strings. ``chat_template`` (a Jinja string)
    is stored with it, and its words join the vocabulary. Returns ``directory``."""
    import re

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in [*texts, *extra, chat_template or ""] for w in re.findall(r"\w+|[^\w\s]+", t.lower())})
    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(directory))
    return directory
