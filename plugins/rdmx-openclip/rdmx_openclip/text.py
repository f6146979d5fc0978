"""open_clip text towers as frozen, L2-normalised caption encoders.

Only the text tower is built (no 400M-parameter vision tower); pretrained weights are the
``text.*`` entries of the open_clip checkpoint in the local Hugging Face cache. The tokenizer is
loaded from the same cached snapshot, only when strings are encoded.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import _build_text_tower

from rdmx.errors import RdmxError
from rdmx.fingerprint import fingerprint
from rdmx.represent.encoder import EncoderSpec
from rdmx.represent.presets import file_digest, load_state_dict, missing_error, resolve_weights, seeded
from rdmx_openclip.plugin import SIGLIP2, SIGLIP2_MODEL, SIGLIP2_REPO, TINY_EMBED, TINY_TEXT, WEIGHTS

PRESET_VERSION = "1"


class TextTowerEncoder(torch.nn.Module):
    """``forward(texts or token ids) -> (B, dim)`` float32, L2-normalised. Frozen, eval mode."""

    def __init__(self, spec: EncoderSpec, tower: torch.nn.Module, text_cfg: dict, tokenizer_dir: Path | None):
        super().__init__()
        self.spec = spec
        self.tower = tower
        self.text_cfg = text_cfg
        self.tokenizer_dir = tokenizer_dir
        self._tokenizer = None
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def train(self, mode: bool = True) -> TextTowerEncoder:
        return super().train(False)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            if self.tokenizer_dir is None:
                raise RdmxError(f"encoder '{self.spec.name}': no cached tokenizer (random weights); pass token ids "
                               "or set tokenizer = \"<local tokenizer directory>\"")
            kwargs = self.text_cfg.get("tokenizer_kwargs", {})
            self._tokenizer = open_clip.tokenizer.HFTokenizer(
                str(self.tokenizer_dir), context_length=self.spec.resolution, **kwargs)
        return self._tokenizer(list(texts))

    def forward(self, texts: list[str] | torch.Tensor) -> torch.Tensor:
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        device = next(self.parameters()).device
        tokens = tokens.to(device)
        if self.spec.dtype == "float32":
            f = self.tower(tokens)
        else:
            with torch.autocast(device.type, dtype=getattr(torch, self.spec.dtype)):
                f = self.tower(tokens)
        return F.normalize(f.float(), dim=-1)


def _model_cfg(folder: Path | None) -> dict:
    cfg_file = folder / "open_clip_config.json" if folder is not None else None
    if cfg_file is not None and cfg_file.is_file():
        return json.loads(cfg_file.read_text())["model_cfg"]
    return open_clip.get_model_config(SIGLIP2_MODEL)


def build(config) -> TextTowerEncoder:
    w = resolve_weights(config, "siglip2-text", SIGLIP2_REPO, [SIGLIP2])
    if w.mode == "random":
        model_cfg = open_clip.get_model_config(SIGLIP2_MODEL)
        embed, text_cfg = (TINY_EMBED, dict(TINY_TEXT)) if config.tiny else (model_cfg["embed_dim"], dict(model_cfg["text_cfg"]))
        folder = None
    else:
        folder = w.path if w.path.is_dir() else w.path.parent
        model_cfg = _model_cfg(folder)
        embed, text_cfg = model_cfg["embed_dim"], dict(model_cfg["text_cfg"])
    if config.context_length:
        text_cfg["context_length"] = config.context_length
    tokenizer_dir, tokenizer_id = folder, ()
    if config.tokenizer:
        tokenizer_dir = Path(config.tokenizer).expanduser()
        files = sorted(p for p in tokenizer_dir.glob("*") if p.is_file()) if tokenizer_dir.is_dir() else []
        if not files:
            raise RdmxError(f"encoder 'siglip2-text': tokenizer = {config.tokenizer!r} is not a tokenizer directory")
        tokenizer_id = (("tokenizer", fingerprint({p.name: file_digest(p) for p in files})),)
    with seeded(config.seed):
        tower = _build_text_tower(embed, text_cfg)
    if w.mode != "random":
        file = next((folder / f for f in WEIGHTS if (folder / f).is_file()), w.path if w.path.is_file() else None)
        if file is None:
            raise missing_error("siglip2-text", SIGLIP2_REPO, [SIGLIP2])
        sd = load_state_dict(file)
        tower.load_state_dict({k[len("text."):]: v for k, v in sd.items() if k.startswith("text.")})
    spec = EncoderSpec(
        name="siglip2-text",
        family="open_clip",
        checkpoint=f"hf-hub:{SIGLIP2_REPO}",
        dim=embed,
        resolution=text_cfg["context_length"],  # for text: the token context length
        weights=w.spec_weights,
        revision=w.revision,
        resize="none",
        antialias=False,
        mean=(),
        std=(),
        pooling=text_cfg.get("pool_type", "last"),
        dtype="bfloat16",
        preset_version=PRESET_VERSION,
        seed=config.seed if w.mode == "random" else None,
        extra=(("modality", "text"), ("l2_normalised", True)) + ((("tiny", True),) if config.tiny else ())
        + tokenizer_id,
    )
    return TextTowerEncoder(spec, tower, text_cfg, tokenizer_dir)
