"""Prompt pools: the text conditions a text-to-image generator is trained and sampled on.

A pool is an ordered tuple of prompts; a generator's condition is an index into it (drawn
uniformly for training), so the same index names the same prompt for the generator's text
states and for the joint law's text embedding. Files:

* ``.txt``   one prompt per line (blank lines are not prompts);
* ``.jsonl`` one JSON object per line, the prompt under ``key`` (GenEval metadata, Pick-a-Pic);
* ``.csv``   a header and a ``key`` column;
* ``.json``  a JSON list of strings, or a COCO captions file (first caption per image, by image id).

Several files concatenate, each repeated ``repeat`` times (the release's geALL pool is COCO's
captions followed by GenEval's 553 prompts x 32). An empty prompt in a JSONL/CSV/JSON file is an
error naming the file and line, unless ``on_empty = "skip"`` (then they are counted in a warning).
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rdmx.errors import RdmxError
from rdmx.files import jsonl_records


@dataclass(frozen=True)
class PromptPool:
    """An ordered pool of prompts; a condition id ``i`` means ``prompts[i]``."""

    prompts: tuple[str, ...]
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.prompts)

    def fingerprint(self) -> str:
        return prompts_fingerprint(self.prompts)


def prompts_fingerprint(prompts: Sequence[str]) -> str:
    """sha256 over the prompts in order (16 hex digits)."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def _records(path: Path, key: str) -> list[tuple[object, str]]:
    """(raw prompt value, where) of every record of a prompt file."""
    suffix = path.suffix.lower()
    out: list[tuple[object, str]] = []
    if suffix == ".txt":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                out.append((line, f"{path}:{n}"))
    elif suffix in (".jsonl", ".ndjson"):
        for n, obj in jsonl_records(path, "prompt file "):
            if not isinstance(obj, dict) or key not in obj:
                raise RdmxError(f"prompt file {path}, line {n}: needs a '{key}' field")
            out.append((obj[key], f"{path}:{n}"))
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if key not in (reader.fieldnames or []):
                raise RdmxError(f"prompt file {path}: the CSV header has no '{key}' column ({reader.fieldnames})")
            out.extend((rec[key], f"{path}:{n}") for n, rec in enumerate(reader, 2))
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            out.extend((v, f"{path}[{i}]") for i, v in enumerate(data))
        elif isinstance(data, dict) and "annotations" in data:  # COCO captions: first per image, by id
            first: dict[int, object] = {}
            for a in data["annotations"]:
                first.setdefault(int(a["image_id"]), a.get("caption"))
            out.extend((first[i], f"{path}: image id {i}") for i in sorted(first))
        else:
            raise RdmxError(f"prompt file {path}: a .json prompt file is a list of strings or COCO captions")
    else:
        raise RdmxError(f"prompt file {path}: unknown suffix {suffix!r} (.txt, .jsonl, .csv, .json)")
    return out


def read_prompts(path: str | Path, *, key: str = "prompt", on_empty: str = "error") -> list[str]:
    """The prompts of one file, stripped; empty ones raise (or are counted and skipped)."""
    path = Path(path)
    if not path.is_file():
        raise RdmxError(f"prompt file {path} does not exist")
    prompts, empty = [], []
    for value, where in _records(path, key):
        text = "" if value is None else str(value).strip()
        if text:
            prompts.append(text)
        else:
            empty.append(where)
    if empty:
        if on_empty != "skip":
            more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
            raise RdmxError(f"prompt file {empty[0]}: empty prompt{more}; remove it or set on_empty = \"skip\"")
        warnings.warn(f"prompt file {path}: skipped {len(empty)} empty prompt(s)", stacklevel=2)
    if not prompts:
        raise RdmxError(f"prompt file {path}: no prompts")
    return prompts


def prompt_pool(paths: str | Sequence[str], repeat: int | Sequence[int] = 1, *, key: str = "prompt",
                on_empty: str = "error") -> PromptPool:
    """The concatenation of ``paths``' prompts, file ``i`` repeated ``repeat[i]`` times."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    repeats = [repeat] * len(paths) if isinstance(repeat, int) else list(repeat)
    if len(repeats) != len(paths):
        raise RdmxError(f"prompt pool: {len(paths)} file(s) but {len(repeats)} repeat count(s)")
    prompts: list[str] = []
    for p, r in zip(paths, repeats, strict=True):
        prompts.extend(read_prompts(p, key=key, on_empty=on_empty) * int(r))
    return PromptPool(tuple(prompts), tuple(str(p) for p in paths))


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-id order (sorted WordNet ids), as torchvision ships them."""
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES
    except ImportError:
        raise RdmxError("ImageNet class names come from torchvision's category list: pip install torchvision") from None
    return tuple(_IMAGENET_CATEGORIES)


def class_prompts(template: str, num_classes: int, data_names: Sequence[str] = ()) -> tuple[list[str], str]:
    """One prompt per class id, ``template`` with ``{class}`` replaced by the class name: torchvision's
    ImageNet names for a 1000-class generator, else the data's class names. Returns the prompts and
    where the names came from."""
    if "{class}" not in template:
        raise RdmxError(f"--class-prompts {template!r}: the template needs '{{class}}' where the class name goes, "
                        f"e.g. 'a photo of a {{class}}'")
    if num_classes <= 0:
        raise RdmxError("--class-prompts needs a class-conditional generator (this recipe's data has no classes)")
    if num_classes == 1000:
        names, source = imagenet_class_names(), "torchvision's ImageNet-1k categories"
    elif len(data_names) == num_classes:
        names, source = tuple(data_names), "the data's class names"
    else:
        raise RdmxError(f"--class-prompts: the generator has {num_classes} classes and the data names "
                        f"{len(data_names)} of them")
    return [template.replace("{class}", name) for name in names], source
