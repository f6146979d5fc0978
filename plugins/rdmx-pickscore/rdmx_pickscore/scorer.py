"""PickScore: score = exp(logit_scale) · cos(image embedding, prompt embedding) of the PickScore CLIP.

Images go through the CLIP processor as uint8 PIL images (as in the reference implementation),
so a generated tensor in [0, 1] is rounded to 8 bits first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.represent.presets import HFSource

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def to_uint8_pil(images: Any) -> list[Image.Image]:
    """PIL RGB images from a (B, C, H, W) tensor in [0, 1] (rounded to uint8) or a list of PIL images."""
    if isinstance(images, (list, tuple)) and all(isinstance(i, Image.Image) for i in images):
        return [i.convert("RGB") for i in images]
    x = torch.as_tensor(images).detach().float()
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise RdmxError(f"pickscore: images must be (B, 1|3, H, W) in [0, 1], got shape {tuple(x.shape)}")
    arr = x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return [Image.fromarray(a, mode="RGB") for a in arr]


def _embedding(out: Any) -> torch.Tensor:
    """Projected embedding from ``get_*_features`` (a tensor, or an output with ``pooler_output``)."""
    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
    return emb.float() / emb.float().norm(dim=-1, keepdim=True)


class PickScorer:
    """Scores (image, prompt) pairs with a CLIP model and its processor."""

    def __init__(self, model: Any, processor: Any, device: str | torch.device = "cpu", batch_size: int = 16,
                 max_length: int = 77):
        self.model = model.eval().requires_grad_(False).to(device)
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def score(self, images: Any, prompts: Sequence[str]) -> torch.Tensor:
        """(B,) float32 scores of image i against prompt i."""
        pil = to_uint8_pil(images)
        prompts = list(prompts)
        if len(pil) != len(prompts) or not all(isinstance(p, str) for p in prompts):
            raise RdmxError(f"pickscore: needs one text prompt per image ({len(pil)} images, {len(prompts)} prompts)")
        dtype = next(self.model.parameters()).dtype
        scores = []
        for start in range(0, len(pil), self.batch_size):
            stop = start + self.batch_size
            pixels = self.processor.image_processor(images=pil[start:stop], return_tensors="pt").pixel_values
            text = self.processor.tokenizer(prompts[start:stop], padding=True, truncation=True,
                                            max_length=self.max_length, return_tensors="pt")
            img = _embedding(self.model.get_image_features(pixel_values=pixels.to(self.device, dtype)))
            txt = _embedding(self.model.get_text_features(input_ids=text.input_ids.to(self.device),
                                                          attention_mask=text.attention_mask.to(self.device)))
            scores.append(self.model.logit_scale.float().exp() * (img * txt).sum(dim=-1))
        return torch.cat(scores).cpu()


def win_rate(a: Any, b: Any) -> float:
    """Share of matched pairs on which ``a`` scores strictly higher than ``b`` (ties count as losses)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise RdmxError(f"win rate needs two equal-length 1-D score lists, got {tuple(a.shape)}, {tuple(b.shape)}")
    return float((a > b).double().mean())


def _local(name: str, files: tuple[tuple[str, ...], ...], what: str) -> Path:
    """A local directory for ``name``: the directory itself, or its snapshot in the Hugging Face cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    found = HFSource(name, files).locate()
    if found is None:
        raise WeightsMissingError(
            f"pickscore: the {what} '{name}' is not in the local Hugging Face cache (nothing is downloaded "
            f"at run time). On a machine with network access run `hf download {name}` (or "
            f"`huggingface-cli download {name}`), or set {what} = \"<local directory>\"."
        )
    return found[0]


def load_scorer(config: Any) -> PickScorer:
    """The PickScore model and processor from local files only; missing files -> WeightsMissingError."""
    from transformers import AutoProcessor, CLIPModel

    from rdmx_pickscore.plugin import MODEL_FILES, PROCESSOR_FILES

    model_dir = _local(config.model, MODEL_FILES, "model")
    processor_dir = _local(config.processor, PROCESSOR_FILES, "processor")
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True, dtype=DTYPES[config.dtype])
    processor = AutoProcessor.from_pretrained(processor_dir, local_files_only=True)
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return PickScorer(model, processor, device, config.batch_size, config.max_length)
