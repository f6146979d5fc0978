"""Build every encoder's frozen reference material once, keyed by fingerprints, reused after.

For each encoder of the battery (``encoders``: name -> Encoder) this
1. extracts train and val features (``rdmx.reference.extract``: sharded, resumable, dealt
   across ranks under torch.distributed),
2. for training encoders, builds the reference bundle (``build_reference``, streamed from the
   train shards) and the real floor (``estimate_floor`` on val features against it),
3. for every encoder, stores the evaluation banks: the same random ``eval_rows`` train rows and
   val rows (one seeded draw shared by all encoders, so banks describe the same images).

Conditions of a joint law: class ids are the labels; for the text-joint law the data carries
captions (``RealData.captions``, labels are caption ids) and ``text_encoder`` embeds them once
(``rdmx.reference.text``), so a row's condition is the embedding of its own caption.

Cache layout under ``cache_dir`` (every name carries the encoder and data fingerprints)::

    features/<enc>-<data>-<split>/                       extracted features (shards)
    texts/<text enc>-<texts>.safetensors                 caption embeddings (text-joint law)
    references/<enc>-<data>-<request>-<joint>/           bundle (save_reference)
    floors/<enc>-<data>-<request>-<joint>-<estimator>-d<draws>-n<rows>-s<seed>.json
    banks/<enc>-<data>-<split>-n<rows>-s<seed>.safetensors
    banks/<enc>-<data>-<split>-first<rows>.safetensors    (reference.rows = "first": MMDr's real rows)

Anything present is loaded instead of recomputed. Under torch.distributed rank 0 computes
and writes; the other ranks wait at a barrier and load.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdmx.compare.base import ROW_RULES
from rdmx.errors import RdmxError
from rdmx.fingerprint import fingerprint
from rdmx.console import warn
from rdmx.files import IntegrityError, clean_stale_temps, load_tensors, read_sealed_json, save_tensors, write_sealed_json
from rdmx.reference.bundle import MANIFEST_FILE, REBUILD, TENSORS_FILE, verify_bundle
from rdmx.reference.extract import (
    DEFAULT_SHARD_ROWS,
    FeatureSet,
    _barrier,
    dist_rank_world,
    extract_features,
    feature_dir,
    repair_features,
)

SPLITS = ("train", "val")


@dataclass
class BuiltReference:
    """One encoder's frozen material. ``reference`` and ``floor`` are None for held-out encoders."""

    name: str
    role: str  # "train" | "heldout"
    encoder_fingerprint: str
    data_fingerprint: str
    reference: Any  # rdmx.reference.bundle.Reference | None
    floor: float | None
    train_bank: torch.Tensor  # (n, d) float32, CPU
    val_bank: torch.Tensor
    train_bank_labels: torch.Tensor  # (n,) long
    val_bank_labels: torch.Tensor
    paths: dict[str, Path] = field(default_factory=dict)
    captions: dict[str, torch.Tensor] | None = None  # text-joint: split -> τ of caption id (n, t)
    # reference.rows = "first": MMDr's real rows, the first of each split in the pool's order (else None)
    train_first: torch.Tensor | None = None
    val_first: torch.Tensor | None = None


def joint_key(joint: Any, text_fingerprint: str | None = None) -> str:
    """'marginal' or a hash of the joint spec (and of the text encoder for the text-joint law)."""
    if joint is None or getattr(joint, "kind", "marginal") == "marginal":
        return "marginal"
    dump = joint.model_dump() if hasattr(joint, "model_dump") else dict(vars(joint))
    dump.pop("text_encoder", None)  # a recipe block; the encoder's fingerprint stands for it
    if joint.kind == "text":
        dump["tau"] = text_fingerprint
    return f"{joint.kind}{fingerprint(dump, 8)}"


def estimator_key(estimator: Any) -> str:
    """A hash of the estimator's class and config (floors depend on both)."""
    config = getattr(estimator, "config", None)
    dump = config.model_dump() if hasattr(config, "model_dump") else repr(config)
    cls = type(estimator)
    return fingerprint({"class": f"{cls.__module__}.{cls.__qualname__}", "config": dump})


def bank_rows(rows: int, n: int, seed: int, split: str) -> np.ndarray:
    """The bank's row indices: ``min(n, rows)`` distinct rows, one seeded draw per split, sorted."""
    salt = SPLITS.index(split) + 1
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(rows, size=min(n, rows), replace=False))


def _joint_kind(joint: Any) -> str:
    return getattr(joint, "kind", "marginal") if joint is not None else "marginal"


def caption_embeddings(data: Any, text_encoder: Any, cache_dir: str | Path, progress: bool = False,
                       batch_size: int = 256) -> dict[str, torch.Tensor]:
    """split -> τ of every caption id (float32, CPU), cached by text-encoder and captions fingerprint."""
    from rdmx.reference.text import embed_texts

    captions = getattr(data, "captions", None)
    if not captions:
        raise RdmxError(
            "a text-joint reference needs a caption for every real image; this data source has none "
            "(use a captioned dataset, e.g. data.name = \"captioned-images\")"
        )
    if text_encoder is None:
        raise RdmxError("a text-joint reference needs a text encoder (joint.text_encoder)")
    return {split: embed_texts(text_encoder, captions[split], cache_dir=Path(cache_dir), progress=progress,
                               batch_size=batch_size) for split in SPLITS}


def _condition(kind: str, labels: torch.Tensor, tau: torch.Tensor | None) -> torch.Tensor | None:
    """A row's condition: its class id, the embedding of its caption, or None (marginal)."""
    if kind == "class":
        return labels
    if kind == "text":
        return tau[labels.long()]
    return None


def _check_name(path: Path, stored: Any, what: str) -> None:
    """Banks and floors record their own file name, which names their encoder, data, split, rows and
    seed: a valid file copied or renamed over another (another encoder's bank) is refused."""
    if stored != path.name:
        problem = ("was written for another file (" + repr(stored) + "): copied or renamed over this one"
                   if stored else "records no file name (written by an older rdmx)")
        raise IntegrityError(path, problem, what, REBUILD)


def _load_bank(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data, meta = load_tensors(path, what="an evaluation bank", remedy=REBUILD)
    if set(data) != {"features", "labels"} or data["features"].ndim != 2:
        raise IntegrityError(path, "holds tensors of the wrong names or shapes", "an evaluation bank", REBUILD)
    _check_name(path, meta.get("file"), "an evaluation bank")
    return data["features"], data["labels"]


def _read_floor(path: Path) -> float:
    stored = read_sealed_json(path, what="a real-data floor", remedy=REBUILD)
    _check_name(path, stored.get("file"), "a real-data floor")
    value = stored.get("floor")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise IntegrityError(path, f"holds no finite floor (got {value!r})", "a real-data floor", REBUILD)
    return float(value)


DERIVED_FILES = ("floor", "train_bank", "val_bank", "train_first", "val_first")


def missing_outputs(paths: Mapping[str, Path]) -> list[str]:
    """The derived files of one encoder that do not exist yet."""
    out = [k for k in DERIVED_FILES if k in paths and not paths[k].exists()]
    if "reference" in paths and not (paths["reference"] / MANIFEST_FILE).exists():
        out.append("reference")
    return out


def discard_outputs(paths: Mapping[str, Path]) -> None:
    """Delete every derived file of one encoder (``--rebuild``); its features stay."""
    for key in DERIVED_FILES:
        if key in paths:
            paths[key].unlink(missing_ok=True)
    if "reference" in paths:
        for name in (MANIFEST_FILE, TENSORS_FILE):
            (paths["reference"] / name).unlink(missing_ok=True)


def discard_damaged(paths: Mapping[str, Path]) -> list[str]:
    """Delete the derived files of one encoder that fail verification; one note per file."""
    notes = []
    checks = {k: _read_floor if k == "floor" else _load_bank for k in DERIVED_FILES}
    for key, check in checks.items():
        path = paths.get(key)
        if path is None or not path.exists():
            continue
        try:
            check(path)
        except IntegrityError as exc:
            path.unlink(missing_ok=True)
            notes.append(f"{exc}: deleted, rebuilding it")
    bundle = paths.get("reference")
    if bundle is not None and (bundle / MANIFEST_FILE).exists():
        try:
            verify_bundle(bundle)
        except IntegrityError as exc:
            (bundle / MANIFEST_FILE).unlink(missing_ok=True)
            (bundle / TENSORS_FILE).unlink(missing_ok=True)
            notes.append(f"{exc}: deleted, rebuilding it")
    return notes


def build_references(
    data: Any,
    encoders: Mapping[str, torch.nn.Module],
    estimator_request: Any = None,
    *,
    cache_dir: str | Path,
    joint: Any = None,
    estimator: Any = None,
    train_names: Collection[str] | None = None,
    floors: tuple[int, int] | None = (8, 5120),
    eval_rows: int = 16384,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    rebuild: bool = False,
    text_encoder: Any = None,
    rows: str = "random",
    first_rows: int = 0,
) -> dict[str, BuiltReference]:
    """Extract, build, floor and bank every encoder (see the module docstring); name -> result.

    ``data``: train/val Datasets of (sample, label) and ``fingerprint()`` (e.g. RealData).
    ``estimator_request``: the ReferenceRequest of the bundles (default ``estimator.request()``).
    ``train_names``: the training encoders (default all); the others get banks only.
    ``floors``: (draws, rows) for ``estimate_floor``, or None for no floors; floors need ``estimator``.
    ``rebuild``: recompute every bundle, floor and bank from the (verified) features.
    Derived files that fail verification are deleted and rebuilt; damaged feature shards are
    extracted again (see ``rdmx.reference.extract.repair_features``).
    ``text_encoder``: the text tower τ of a text-joint law (captions come from ``data.captions``).
    ``rows``: ``"first"`` takes k_rr over the first rows of the train pool and keeps the first
    ``first_rows`` rows of each split as MMDr's real sets (the release's rule; ``"random"``: seeded
    subsamples, the bank's rows).
    """
    from rdmx.reference.bundle import build_reference, load_reference, save_reference
    from rdmx.reference.floors import estimate_floor

    cache = Path(cache_dir)
    train_names = list(encoders) if train_names is None else list(train_names)
    unknown = sorted(set(train_names) - set(encoders))
    if unknown:
        raise RdmxError(f"training encoders {unknown} are not in the battery ({', '.join(encoders)})")
    if estimator_request is None:
        if estimator is None and train_names:
            raise RdmxError("build_references needs a reference request or an estimator")
        estimator_request = estimator.request() if estimator is not None else None
    if rows not in ROW_RULES:
        raise RdmxError(f"reference.rows must be one of {ROW_RULES}, got {rows!r}")
    if rows == "first" and estimator_request is not None and estimator_request.wants_krr:
        estimator_request = replace(estimator_request, krr_rows="first")
    for split in SPLITS if rows == "first" else ():
        have = len(getattr(data, split))
        if first_rows > have:
            raise RdmxError(f"reference.rows = 'first' takes MMDr's real rows as the first eval.mmd_n = {first_rows:,} "
                            f"rows of each split, and the {split} split has {have:,}: lower eval.mmd_n (or eval.n) to "
                            f"at most {have:,}")
    kind = _joint_kind(joint)
    device = torch.device(device) if device is not None else torch.device("cpu")
    data_fp = data.fingerprint()
    rank, _ = dist_rank_world()
    tau = caption_embeddings(data, text_encoder, cache, progress) if kind == "text" else None

    feature_dirs = {split: {name: feature_dir(cache, enc.fingerprint, data_fp, split) for name, enc in encoders.items()}
                    for split in SPLITS}

    req_fp = estimator_request.fingerprint() if estimator_request is not None else "none"
    jkey = joint_key(joint, text_encoder.fingerprint if kind == "text" else None)
    est_fp = estimator_key(estimator) if estimator is not None else "none"
    plan: dict[str, dict[str, Path]] = {}
    for name, enc in encoders.items():
        efp = enc.fingerprint
        paths = {f"{s}_features": feature_dirs[s][name] for s in SPLITS}
        for split in SPLITS:
            paths[f"{split}_bank"] = cache / "banks" / f"{efp}-{data_fp}-{split}-n{eval_rows}-s{seed}.safetensors"
            if rows == "first" and first_rows:
                paths[f"{split}_first"] = cache / "banks" / f"{efp}-{data_fp}-{split}-first{first_rows}.safetensors"
        if name in train_names:
            paths["reference"] = cache / "references" / f"{efp}-{data_fp}-{req_fp}-{jkey}"
            if floors is not None and estimator is not None:
                draws, floor_rows = floors
                paths["floor"] = (cache / "floors" /
                                  f"{efp}-{data_fp}-{req_fp}-{jkey}-{est_fp}-d{draws}-n{floor_rows}-s{seed}.json")
        plan[name] = paths

    if rank == 0:  # damaged derived files are discarded (and rebuilt below), never used
        for folder in (cache / "banks", cache / "floors", *(p["reference"] for p in plan.values() if "reference" in p)):
            clean_stale_temps(folder)  # what killed writers left
        for name, paths in plan.items():
            if rebuild:
                discard_outputs(paths)
            for note in discard_damaged(paths):
                warn(note)
    _barrier()
    needed = {name: encoders[name] for name, paths in plan.items() if missing_outputs(paths)}
    if needed and rank == 0:  # the features they are built from must be whole: damaged shards are redone
        for name in needed:
            for split in SPLITS:
                for note in repair_features(plan[name][f"{split}_features"], rows=len(getattr(data, split)),
                                            dim=int(encoders[name].dim)):
                    warn(note)
    _barrier()
    for split in SPLITS if needed else ():
        extract_features(
            needed, getattr(data, split), cache_dir=cache, data_fingerprint=data_fp, split=split,
            shard_rows=shard_rows, batch_size=batch_size, num_workers=num_workers, progress=progress,
        )

    made: dict[str, Any] = {}  # references built by this process, kept in memory
    if rank == 0:
        for name, paths in plan.items():
            enc = encoders[name]
            if "reference" in paths and not (paths["reference"] / MANIFEST_FILE).exists():
                train_dir = paths["train_features"]

                def chunks(train_dir=train_dir):
                    for feats, labels in FeatureSet.open(train_dir).chunks():
                        yield feats, _condition(kind, labels, None if tau is None else tau["train"])

                ref = build_reference(chunks, estimator_request, joint=joint, encoder_fingerprint=enc.fingerprint,
                                      data_fingerprint=data_fp, device=device)
                save_reference(ref, paths["reference"])
                made[name] = ref
            if "floor" in paths and not paths["floor"].exists():
                ref = made.get(name) or load_reference(paths["reference"], encoder_fingerprint=enc.fingerprint,
                                                       data_fingerprint=data_fp, device=device)
                made[name] = ref
                val_feats, val_labels = FeatureSet.open(paths["val_features"]).load_all()
                draws, floor_rows = floors
                val_cond = _condition(kind, val_labels, None if tau is None else tau["val"])
                value = estimate_floor(estimator, ref, val_feats.to(device),
                                       None if val_cond is None else val_cond.to(device),
                                       draws=draws, n=floor_rows, seed=seed)
                paths["floor"].parent.mkdir(parents=True, exist_ok=True)
                write_sealed_json(paths["floor"], {"floor": value, "draws": draws, "rows": floor_rows, "seed": seed,
                                                   "file": paths["floor"].name,
                                                   "estimator": repr(estimator)})
            for split in SPLITS:
                bank = paths[f"{split}_bank"]
                if not bank.exists():
                    fs = FeatureSet.open(paths[f"{split}_features"])
                    feats, labels = fs.take(bank_rows(fs.rows, eval_rows, seed, split))
                    bank.parent.mkdir(parents=True, exist_ok=True)
                    save_tensors(bank, {"features": feats, "labels": labels},
                                        {"rows": str(len(feats)), "seed": str(seed), "split": split, "file": bank.name})
                head = paths.get(f"{split}_first")
                if head is not None and not head.exists():
                    feats, labels = FeatureSet.open(paths[f"{split}_features"]).take(np.arange(first_rows))
                    head.parent.mkdir(parents=True, exist_ok=True)
                    save_tensors(head, {"features": feats, "labels": labels},
                                 {"rows": str(len(feats)), "rule": "first", "split": split, "file": head.name})
    _barrier()

    out = {}
    for name, paths in plan.items():
        enc = encoders[name]
        ref = made.get(name)
        if ref is None and "reference" in paths:
            ref = load_reference(paths["reference"], encoder_fingerprint=enc.fingerprint,
                                 data_fingerprint=data_fp, device=device)
        elif ref is not None:
            ref = ref.to(device)
        floor = _read_floor(paths["floor"]) if "floor" in paths else None
        train_bank, train_labels = _load_bank(paths["train_bank"])
        val_bank, val_labels = _load_bank(paths["val_bank"])
        first = {s: _load_bank(paths[f"{s}_first"])[0] if f"{s}_first" in paths else None for s in SPLITS}
        out[name] = BuiltReference(
            name=name, role="train" if name in train_names else "heldout", encoder_fingerprint=enc.fingerprint,
            data_fingerprint=data_fp, reference=ref, floor=floor, train_bank=train_bank, val_bank=val_bank,
            train_bank_labels=train_labels, val_bank_labels=val_labels, paths=paths, captions=tau,
            train_first=first["train"], val_first=first["val"],
        )
    return out
