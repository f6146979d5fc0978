"""FLUX.2 prompt states: the frozen Qwen3's hidden states of a prompt pool, computed once, cached.

Recipe (diffusers' ``Flux2KleinPipeline``): each prompt becomes one user message of the
tokenizer's chat template (generation prompt added, thinking disabled), is padded / truncated to
``ctx_len`` tokens and run through the frozen Qwen3; the hidden states of ``layers`` (9, 18, 27:
outputs of those decoder layers) are stacked per token into a ``(ctx_len, len(layers) × hidden)``
matrix — the transformer's ``encoder_hidden_states``.

Cache, one directory per fingerprint (``<cache_dir>/prompt-states/<fingerprint>/``)::

    states.npy     (U, L, D) uint16: the exact bfloat16 bits of each distinct prompt's states
    index.npy      (P,) int64: the row of ``states`` of pool prompt i (repeated prompts share one)
    digests.npy    (U,) uint64: a BLAKE2b digest of each row of ``states``
    manifest.json  the fingerprint and what it hashes: text encoder (weights, revision), tokenizer,
                   ctx_len, layers, template, prompts (in order); the sha256 of index.npy and
                   digests.npy; its own sha256 (rdmx.files sealed JSON)

It is written to a temporary directory and renamed into place, so a directory that exists is
complete. A directory whose manifest names another fingerprint is refused with the fields that
differ. Nothing damaged is used: the manifest and the two small files are verified on opening,
every state row when it is gathered (so a 61 GB pool is never hashed whole). States are memory-mapped and gathered per batch: the paper's pool (100,479 prompts, 83,336
distinct, 48 × 7680) is 61 GB on disk and is never loaded whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdmx.data.folder import file_digest
from rdmx.data.prompts import prompts_fingerprint
from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.files import file_sha256, temp_path, write_sealed_json
from rdmx.fingerprint import fingerprint
from rdmx.represent.presets import HFSource, seeded

FORMAT = "rdmx-flux2-prompt-states/1"
TEMPLATE = "chat:user:add_generation_prompt:no_thinking/pad-max_length/truncate"
TEXT_WEIGHTS = ("model.safetensors.index.json", "model.safetensors")


def _dir_identity(directory: Path) -> dict[str, str]:
    """Small files by content (configs, tokenizers, weight indexes); weight shards by size + head/tail digest."""
    return {p.name: file_digest(p) for p in sorted(directory.iterdir()) if p.is_file() and not p.name.startswith(".")}


@dataclass
class TextSource:
    """Where the Qwen3 text encoder and its tokenizer come from."""

    mode: str  # "random" | "local"
    encoder_dir: Path | None = None
    tokenizer_dir: Path | None = None
    config: dict[str, Any] | None = None  # random weights: the Qwen3 config
    seed: int = 0
    name: str = ""  # repo id or path, for messages

    def identity(self) -> dict[str, Any]:
        tok = {"tokenizer": _dir_identity(self.tokenizer_dir)} if self.tokenizer_dir else {}
        if self.mode == "random":
            return {"weights": "random", "config": fingerprint(self.config), "seed": self.seed, **tok}
        return {"weights": self.name, "files": _dir_identity(self.encoder_dir), **tok}


def resolve_text_source(config, weights_dir: Path | None, random_config: dict | None) -> TextSource:
    """The text encoder of a ``flux2-klein`` config: random (tiny / random weights), the pipeline's
    ``text_encoder/`` + ``tokenizer/``, or ``config.text_encoder`` (a hub id in the local cache or a
    directory)."""
    tokenizer = Path(config.tokenizer).expanduser() if config.tokenizer else None
    if config.text_encoder is None and random_config is not None:
        if tokenizer is None:
            raise RdmxError("generator 'flux2-klein': random text-encoder weights need tokenizer = \"<directory>\" "
                            "to turn prompts into tokens")
        return TextSource("random", None, tokenizer, dict(random_config), config.seed, "random")
    if config.text_encoder is None:
        enc, tok = weights_dir / "text_encoder", weights_dir / "tokenizer"
        name = str(weights_dir)
    else:
        path = Path(config.text_encoder).expanduser()
        if path.is_dir():
            enc, name = path, str(path)
        else:
            found = HFSource(config.text_encoder, (("config.json",), TEXT_WEIGHTS), snapshot=True).locate()
            if found is None:
                raise WeightsMissingError(
                    f"generator 'flux2-klein': the text encoder '{config.text_encoder}' is not in the local Hugging "
                    f"Face cache; run `hf download {config.text_encoder}` on a machine with network access")
            enc, name = found[0], f"{config.text_encoder}@{found[1]}"
        tok = enc if (enc / "tokenizer_config.json").is_file() else enc.parent / "tokenizer"
    tok = tokenizer or tok
    for what, d in (("text encoder", enc), ("tokenizer", tok)):
        if not d.is_dir():
            raise RdmxError(f"generator 'flux2-klein': no {what} directory at {d}")
    return TextSource("local", enc, tok, None, config.seed, name)


class Qwen3PromptEncoder:
    """The frozen Qwen3 and its tokenizer, loaded on first use and released after."""

    def __init__(self, source: TextSource, ctx_len: int, layers: Sequence[int], device: str = "auto",
                 dtype: torch.dtype = torch.bfloat16):
        self.source, self.ctx_len, self.layers = source, int(ctx_len), tuple(int(i) for i in layers)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.dtype = dtype
        self.model = self.tokenizer = None

    def load(self) -> None:
        from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

        src = self.source
        self.tokenizer = AutoTokenizer.from_pretrained(str(src.tokenizer_dir), local_files_only=True)
        if src.mode == "random":
            with seeded(src.seed):
                model = Qwen3ForCausalLM(Qwen3Config(**src.config))
            model = model.to(self.dtype)
        else:
            model = Qwen3ForCausalLM.from_pretrained(str(src.encoder_dir), dtype=self.dtype, local_files_only=True)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and self.ctx_len > positions:
            raise RdmxError(f"generator 'flux2-klein': generator.ctx_len = {self.ctx_len} prompt tokens, but the text "
                            f"encoder takes at most {positions} positions: lower generator.ctx_len (the release: 48 "
                            f"to train, 232 for its PickScore protocol)")
        need = max(self.layers)
        if need > model.config.num_hidden_layers:
            raise RdmxError(f"generator 'flux2-klein': text_layers ask for hidden state {need}, the text encoder "
                            f"has {model.config.num_hidden_layers} layers")
        self.model = model.to(self.device).eval().requires_grad_(False)

    def release(self) -> None:
        self.model = self.tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def width(self) -> int:
        return len(self.layers) * int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, ctx_len, len(layers) × hidden) in the encoder's dtype, on the CPU."""
        if self.model is None:
            self.load()
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True, enable_thinking=False)
                 for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding="max_length", truncation=True,
                               max_length=self.ctx_len)
        body = getattr(self.model, "model", self.model)  # the decoder stack: no vocabulary logits
        out = body(input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device),
                   output_hidden_states=True, use_cache=False)
        states = torch.stack([out.hidden_states[k] for k in self.layers], dim=2)  # (B, L, layers, H)
        return states.reshape(states.shape[0], states.shape[1], -1).to(self.dtype).cpu()


def row_digest(row: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=8).digest(), "little")


def _remedy(path: Path) -> str:
    return f"remove {path} (`rm -r {path}`); the next run computes the prompt states again"


def read_manifest(path: Path) -> dict[str, Any]:
    from rdmx.files import read_sealed_json

    return read_sealed_json(path / "manifest.json", what="a FLUX.2 prompt-state cache", remedy=_remedy(path))


class PromptStates:
    """Memory-mapped prompt states of one pool; ``rows(ids)`` gathers a batch (each row verified)."""

    def __init__(self, path: Path):
        from rdmx.files import IntegrityError, file_sha256

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        for name in ("index.npy", "digests.npy"):
            f = self.path / name
            if not f.is_file() or file_sha256(f) != self.manifest.get("files_sha256", {}).get(name):
                raise IntegrityError(f, "does not match the checksum in its manifest (corrupt or partial)",
                                     "a FLUX.2 prompt-state cache", _remedy(self.path))
        try:
            self.states = np.load(self.path / "states.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise IntegrityError(self.path / "states.npy", f"not readable ({exc})", "a FLUX.2 prompt-state cache",
                                 _remedy(self.path)) from None
        self.index = np.load(self.path / "index.npy")
        self.digests = np.load(self.path / "digests.npy")

    def __len__(self) -> int:
        return len(self.index)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.states.shape[1:])

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L, D) bfloat16 states of prompt ids (CPU)."""
        idx = ids.detach().cpu().long().numpy()
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.index)):
            raise RdmxError(f"prompt ids must lie in [0, {len(self.index)}); got [{idx.min()}, {idx.max()}]")
        rows = self.index[idx]
        block = np.ascontiguousarray(self.states[rows])
        for r, values in zip(rows.tolist(), block, strict=True):
            if row_digest(values) != int(self.digests[r]):
                from rdmx.files import IntegrityError

                raise IntegrityError(self.path / "states.npy", f"row {r} does not match its checksum (corrupt)",
                                     "a FLUX.2 prompt-state cache", _remedy(self.path))
        return torch.from_numpy(block.view(np.int16)).view(torch.bfloat16)


def describe(prompts: Sequence[str], encoder: Qwen3PromptEncoder) -> dict[str, Any]:
    """What a pool's states depend on; its hash is the cache key."""
    return {"format": FORMAT, "text_encoder": encoder.source.identity(), "ctx_len": encoder.ctx_len,
            "layers": list(encoder.layers), "template": TEMPLATE, "dtype": "bfloat16",
            "prompts": prompts_fingerprint(prompts), "count": len(prompts)}


def _differences(have: dict, want: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(have) | set(want)):
        a, b = have.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return out


def _write(path: Path, prompts: Sequence[str], encoder: Qwen3PromptEncoder, manifest: dict, batch: int,
           progress: bool) -> None:
    from tqdm.auto import tqdm

    unique = list(dict.fromkeys(prompts))
    row = {p: i for i, p in enumerate(unique)}
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    digests = np.zeros(len(unique), dtype=np.uint64)
    try:
        states = None
        for start in tqdm(range(0, len(unique), batch), desc="prompt states", unit="batch", disable=not progress,
                          dynamic_ncols=True):
            block = encoder.encode(unique[start : start + batch])
            if states is None:
                states = np.lib.format.open_memmap(tmp / "states.npy", mode="w+", dtype=np.uint16,
                                                   shape=(len(unique), *block.shape[1:]))
            bits = block.contiguous().view(torch.int16).numpy().view(np.uint16)
            states[start : start + block.shape[0]] = bits
            digests[start : start + block.shape[0]] = [row_digest(b) for b in bits]
        states.flush()
        del states
        np.save(tmp / "index.npy", np.asarray([row[p] for p in prompts], dtype=np.int64))
        np.save(tmp / "digests.npy", digests)
        sums = {name: file_sha256(tmp / name) for name in ("index.npy", "digests.npy")}
        write_sealed_json(tmp / "manifest.json", {**manifest, "files_sha256": sums})
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        encoder.release()


def prompt_states(prompts: Sequence[str], encoder: Qwen3PromptEncoder, *, cache_dir: str | Path,
                  path: str | Path | None = None, batch: int = 16, progress: bool = True) -> PromptStates:
    """The pool's states: reused from ``path`` (or the fingerprint-keyed cache), else computed and
    written there; a directory made for another fingerprint is refused."""
    from rdmx.reference.extract import _barrier, dist_rank_world

    prompts = [str(p) for p in prompts]
    if not prompts:
        raise RdmxError("generator 'flux2-klein': the prompt pool is empty")
    what = describe(prompts, encoder)
    fp = fingerprint(what)
    where = Path(path).expanduser() if path else Path(cache_dir) / "prompt-states" / fp
    manifest = where / "manifest.json"
    if manifest.is_file():
        have = read_manifest(where)
        if have.get("fingerprint") != fp:
            diff = "; ".join(_differences(have.get("describes", {}), what)) or "unknown contents"
            raise RdmxError(f"prompt states at {where} have fingerprint {have.get('fingerprint')}, this generator "
                            f"needs {fp} ({diff}); refusing to reuse them — remove the directory or point "
                            f"prompt_states elsewhere")
    elif dist_rank_world()[0] == 0:
        where.parent.mkdir(parents=True, exist_ok=True)
        _write(where, prompts, encoder, {"fingerprint": fp, "describes": what}, batch, progress)
    _barrier()
    return PromptStates(where)
