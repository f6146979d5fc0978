"""Text embeddings τ(c) of the text-joint law, computed once and cached by fingerprint.

τ is a frozen text encoder's embedding, L2-normalised (``encoder(list[str]) -> (B, t)``; the
``siglip2-text`` preset of rdmx-openclip is the paper's). The joint feature of an image x with
text c is ``[φ(x) | β·τ(c)]`` (``rdmx.compare.joint``): real rows use their caption, generated
rows the prompt they were generated from.

Cache: ``<cache_dir>/texts/<encoder fingerprint>-<texts fingerprint>.safetensors`` holding
``embeddings`` (n, t) float32 in the order of the texts; the texts fingerprint hashes every
string in order, so a changed caption or prompt list can never reuse a stale table. Repeated
strings are encoded once. Under torch.distributed rank 0 encodes and writes, the others wait
and load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from rdmx.data.prompts import prompts_fingerprint
from rdmx.errors import RdmxError
from rdmx.console import warn
from rdmx.files import IntegrityError, load_tensors, save_tensors
from rdmx.reference.extract import _barrier, dist_rank_world


def text_cache_path(cache_dir: str | Path, encoder_fp: str, texts: Sequence[str]) -> Path:
    return Path(cache_dir) / "texts" / f"{encoder_fp}-{prompts_fingerprint(texts)}.safetensors"


@torch.no_grad()
def encode_texts(encoder, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """(len(texts), t) float32 unit rows on the CPU; each distinct string is encoded once."""
    from tqdm.auto import tqdm

    texts = [str(t) for t in texts]
    if not texts:
        raise RdmxError("no texts to embed")
    unique = list(dict.fromkeys(texts))
    parts = []
    for start in tqdm(range(0, len(unique), batch_size), desc="text embeddings", disable=not progress,
                      unit="batch", dynamic_ncols=True):
        out = encoder(unique[start : start + batch_size])
        if out.ndim != 2 or out.shape[0] != len(unique[start : start + batch_size]):
            raise RdmxError(f"text encoder returned shape {tuple(out.shape)} for a batch of strings")
        parts.append(F.normalize(out.float(), dim=1).cpu())
    table = torch.cat(parts)
    index = {t: i for i, t in enumerate(unique)}
    return table[torch.tensor([index[t] for t in texts])].contiguous()


def embed_texts(encoder, texts: Sequence[str], *, cache_dir: str | Path | None = None, batch_size: int = 256,
                progress: bool = False) -> torch.Tensor:
    """τ of ``texts`` (float32, CPU), read from or written to the fingerprint-keyed cache."""
    texts = [str(t) for t in texts]
    if cache_dir is None:
        return encode_texts(encoder, texts, batch_size, progress)
    path = text_cache_path(cache_dir, encoder.fingerprint, texts)
    remedy = "it is computed again on the next run"
    if dist_rank_world()[0] == 0:
        if path.exists():
            try:
                _read_table(path, len(texts), remedy)
            except IntegrityError as exc:  # derived data: rebuilt, never used
                warn(f"{exc}: deleted, recomputing it")
                path.unlink(missing_ok=True)
        if not path.exists():
            table = encode_texts(encoder, texts, batch_size, progress)
            save_tensors(path, {"embeddings": table}, {"encoder": encoder.fingerprint, "rows": str(len(texts)),
                                                       "texts": prompts_fingerprint(texts)})
    _barrier()
    return _read_table(path, len(texts), remedy)


def _read_table(path: Path, rows: int, remedy: str) -> torch.Tensor:
    data, _ = load_tensors(path, what="a text-embedding cache", remedy=remedy)
    table = data.get("embeddings")
    if table is None or table.ndim != 2 or table.shape[0] != rows:
        raise IntegrityError(path, f"does not hold {rows} text embeddings", "a text-embedding cache", remedy)
    return table


class PromptConditions:
    """The text-joint law's condition of generated rows: prompt id -> τ(prompt) (rows of a frozen table)."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype.is_floating_point or ids.ndim != 1:
            raise RdmxError("text-joint conditions of generated rows must be prompt ids of shape (N,)")
        return self.table[ids.to(self.table.device).long()]


def prompt_conditions(text_encoder, prompts: Sequence[str] | None, *, cache_dir: str | Path,
                      device: torch.device | str = "cpu", progress: bool = False) -> PromptConditions:
    """τ of every prompt of the generator's pool (cached), as a map from prompt ids."""
    if not prompts:
        raise RdmxError(
            "the text-joint law needs the generator's prompts: use captioned data (its captions are the "
            "pool) or a [prompts] block"
        )
    return PromptConditions(embed_texts(text_encoder, prompts, cache_dir=cache_dir, progress=progress).to(device))
