"""Images with captions: (image, caption) pairs for the text-joint law.

Sources of pairs:

* an image folder plus a table of ``file, caption`` rows — JSON lines (one object per line) or
  CSV with a header — whose ``file`` paths are relative to the folder;
* COCO's ``captions_<split>.json`` read directly: ``images[].file_name`` joined to
  ``annotations[].caption`` by image id, rows ordered by image id.

``pairing = "first"`` keeps each image's first caption in file order (the release's COCO
pairing: one caption per image); ``"all"`` makes one row per caption (the image is repeated).

Nothing is dropped silently. Three problems are detected: an image in the folder (or a COCO
image entry) without a caption, an empty caption (any row), and a file named by the captions
that is not in the folder. With ``on_problem = "error"`` (default) the first one is an
:class:`RdmxError` naming the file (and how many others there are); with ``"skip"`` the affected
rows are left out, counted per kind, reported in a warning and kept in the data identity.

Rows of a split are numbered 0..n-1; the dataset yields ``(image, caption id)`` and
``RealData.captions[split][id]`` is the caption. A seeded validation split is drawn over images
(never over pairs, so no image is on both sides).
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rdmx.data.base import RealData
from rdmx.data.folder import (
    CROP_METHOD,
    FolderListing,
    _images_below,
    listing_digest,
    load_image,
    split_indices,
)
from rdmx.errors import RdmxError
from rdmx.files import jsonl_records

PROBLEMS = ("no_caption", "empty_caption", "missing_file")
_PROBLEM_TEXT = {
    "no_caption": "has no caption",
    "empty_caption": "has an empty caption",
    "missing_file": "is listed but missing from the folder",
}
_SKIP_TEXT = {"no_caption": "image(s) without a caption", "empty_caption": "empty caption(s)",
              "missing_file": "listed file(s) missing"}


@dataclass
class Pairs:
    """(file, caption) rows of one source, with the problems found while reading it."""

    root: Path
    files: list[str] = field(default_factory=list)  # relative POSIX paths, one per row
    captions: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEMS})
    kept: set[str] = field(default_factory=set)  # files with at least one row

    def skipped(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.problems.items()}


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "coco"
    raise RdmxError(f"captions file {path}: cannot tell its format from the suffix; set format = jsonl | csv | coco")


def _table_rows(path: Path, fmt: str, file_key: str, caption_key: str) -> list[tuple[str, str, str]]:
    """(file, caption, where) rows of a JSONL or CSV table; ``where`` names the line."""
    rows = []
    if fmt == "jsonl":
        for n, obj in jsonl_records(path, "captions file "):
            if not isinstance(obj, dict) or file_key not in obj:
                raise RdmxError(f"captions file {path}, line {n}: needs a '{file_key}' field")
            rows.append((str(obj[file_key]), obj.get(caption_key), f"{path}:{n}"))
    else:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [k for k in (file_key, caption_key) if k not in (reader.fieldnames or [])]
            if missing:
                raise RdmxError(f"captions file {path}: the CSV header lacks {missing} (has {reader.fieldnames})")
            for n, rec in enumerate(reader, 2):
                rows.append((str(rec[file_key]), rec.get(caption_key), f"{path}:{n}"))
    return rows


def _coco_rows(path: Path) -> tuple[list[tuple[str, str | None, str]], list[str]]:
    """COCO captions: (file_name, caption, where) rows by image id, and images without annotations."""
    try:
        ann = json.loads(path.read_text(encoding="utf-8"))
        images = {int(im["id"]): str(im["file_name"]) for im in ann["images"]}
        notes = [(int(a["image_id"]), a.get("caption")) for a in ann["annotations"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise RdmxError(f"captions file {path}: not a COCO captions file ({type(exc).__name__}: {exc})") from None
    unknown = sorted({i for i, _ in notes} - set(images))
    if unknown:
        raise RdmxError(f"captions file {path}: annotations refer to image ids missing from 'images' ({unknown[:3]})")
    by_image: dict[int, list] = {}
    for image_id, caption in notes:
        by_image.setdefault(image_id, []).append(caption)
    rows = [(images[i], c, f"{path}: image id {i}") for i in sorted(by_image) for c in by_image[i]]
    uncaptioned = [images[i] for i in sorted(set(images) - set(by_image))]
    return rows, uncaptioned


def _relative(file: str, root: Path) -> str:
    path = Path(file)
    if path.is_absolute():
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def read_pairs(
    root: str | Path,
    captions: str | Path,
    *,
    fmt: str = "auto",
    file_key: str = "file",
    caption_key: str = "caption",
    pairing: str = "first",
) -> Pairs:
    """The (file, caption) rows of an image folder and its captions file, problems recorded."""
    root, path = Path(root), Path(captions)
    if not root.is_dir():
        raise RdmxError(f"image folder {root} does not exist or is not a directory")
    if not path.is_file():
        raise RdmxError(f"captions file {path} does not exist")
    fmt = _detect_format(path, fmt)
    if fmt == "coco":
        rows, uncaptioned = _coco_rows(path)
    elif fmt in ("jsonl", "csv"):
        rows, uncaptioned = _table_rows(path, fmt, file_key, caption_key), []
    else:
        raise RdmxError(f"captions file {path}: unknown format {fmt!r} (jsonl | csv | coco)")
    on_disk = {p.relative_to(root).as_posix() for p in _images_below(root)}
    pairs = Pairs(root)
    pairs.problems["no_caption"].extend(f for f in uncaptioned if f in on_disk)
    listed: set[str] = set(uncaptioned)
    missing: set[str] = set()
    for file, caption, where in rows:
        rel = _relative(file, root)
        listed.add(rel)
        if rel not in on_disk:
            if rel not in missing:
                missing.add(rel)
                pairs.problems["missing_file"].append(f"{rel} ({where})")
            continue
        text = "" if caption is None else str(caption).strip()
        if not text:
            pairs.problems["empty_caption"].append(f"{rel} ({where})")
            continue
        if pairing == "first" and rel in pairs.kept:
            continue
        pairs.kept.add(rel)
        pairs.files.append(rel)
        pairs.captions.append(text)
    pairs.problems["no_caption"].extend(sorted(on_disk - listed))
    return pairs


def check_problems(pairs: Pairs, on_problem: str, source: str) -> dict[str, int]:
    """Raise on the first problem (``on_problem = "error"``) or warn with the counts of what is skipped."""
    counts = pairs.skipped()
    if not any(counts.values()):
        return counts
    if on_problem == "error":
        kind = next(k for k in PROBLEMS if counts[k])
        first = pairs.problems[kind][0]
        others = sum(counts.values()) - 1
        more = f" (and {others} more problem(s))" if others else ""
        raise RdmxError(
            f"captioned data {source}: {first} {_PROBLEM_TEXT[kind]}{more}; fix the captions file or set "
            f"on_problem = \"skip\" to leave such images out (they are counted)"
        )
    detail = ", ".join(f"{n} {_SKIP_TEXT[k]}" for k, n in counts.items() if n)
    warnings.warn(f"captioned data {source}: skipped {detail}", stacklevel=2)
    return counts


class CaptionedImageDataset(torch.utils.data.Dataset):
    """``(image, caption id)`` rows: an ADM-cropped float CHW image in [0, 1] and its row index."""

    def __init__(self, root: Path, files: Sequence[str], size: int, channels: int = 3):
        if channels not in (1, 3):
            raise RdmxError(f"channels must be 1 or 3, got {channels}")
        self.root, self.files, self.size, self.channels = Path(root), list(files), size, channels

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return load_image(self.path(i), self.size, self.channels), torch.tensor(i, dtype=torch.long)


def captions_digest(files: Sequence[str], captions: Sequence[str]) -> str:
    h = hashlib.sha256()
    for f, c in zip(files, captions, strict=True):
        h.update(f"{f}\0{c}\n".encode())
    return h.hexdigest()


def _split_by_image(pairs: Pairs, val_fraction: float, val_count: int | None, seed: int):
    """Row indices (train, val) of a seeded split over distinct images."""
    images = list(dict.fromkeys(pairs.files))
    train_img, val_img = split_indices(len(images), val_fraction=val_fraction, val_count=val_count, seed=seed)
    val_set = {images[i] for i in val_img}
    rows = np.arange(len(pairs.files))
    is_val = np.array([f in val_set for f in pairs.files], dtype=bool)
    return rows[~is_val], rows[is_val]


def captioned_folder(
    path: str | Path,
    captions: str | Path,
    *,
    size: int,
    fmt: str = "auto",
    file_key: str = "file",
    caption_key: str = "caption",
    pairing: str = "first",
    val_path: str | Path | None = None,
    val_captions: str | Path | None = None,
    val_fraction: float = 0.02,
    val_count: int | None = None,
    seed: int = 0,
    channels: int = 3,
    on_problem: str = "error",
    digest_memo: str | Path | None = None,
) -> RealData:
    """RealData of (image, caption) pairs; val is ``val_path`` + ``val_captions`` or a seeded split."""
    if size < 1:
        raise RdmxError(f"image size must be positive, got {size}")
    if (val_path is None) != (val_captions is None):
        raise RdmxError("captioned data: give both val_path and val_captions, or neither (seeded split)")
    read = dict(fmt=fmt, file_key=file_key, caption_key=caption_key, pairing=pairing)
    train_pairs = read_pairs(path, captions, **read)
    skipped = {"train": check_problems(train_pairs, on_problem, f"{path} + {captions}")}
    if not train_pairs.files:
        raise RdmxError(f"captioned data {path} + {captions}: no (image, caption) pair left")
    if val_path is not None:
        val_pairs = read_pairs(val_path, val_captions, **read)
        skipped["val"] = check_problems(val_pairs, on_problem, f"{val_path} + {val_captions}")
        if not val_pairs.files:
            raise RdmxError(f"captioned data {val_path} + {val_captions}: no (image, caption) pair left")
        splits = {"train": (train_pairs, np.arange(len(train_pairs.files))),
                  "val": (val_pairs, np.arange(len(val_pairs.files)))}
        split_id: dict = {"val_path": True}
    else:
        tr, va = _split_by_image(train_pairs, val_fraction, val_count, seed)
        splits = {"train": (train_pairs, tr), "val": (train_pairs, va)}
        split_id = {"val_rows": hashlib.sha256(np.asarray(va, dtype=np.int64).tobytes()).hexdigest()}
    datasets, texts, listings = {}, {}, {}
    for split, (pairs, rows) in splits.items():
        files = [pairs.files[i] for i in rows]
        texts[split] = tuple(pairs.captions[i] for i in rows)
        datasets[split] = CaptionedImageDataset(pairs.root, files, size, channels)
        listings[split] = (FolderListing(pairs.root, tuple(sorted(set(files))), (), ()), files)

    def identity() -> dict:
        return {
            "format": "captioned-images/1",
            "crop": CROP_METHOD,
            "pairing": pairing,
            "images": {s: listing_digest(lst, memo_dir=digest_memo) for s, (lst, _) in listings.items()},
            "captions": {s: captions_digest(files, texts[s]) for s, (_, files) in listings.items()},
            "split": split_id,
            "skipped": skipped,
        }

    return RealData(train=datasets["train"], val=datasets["val"], num_classes=0, class_names=(), image_size=size,
                    channels=channels, identity=identity, captions=texts)
