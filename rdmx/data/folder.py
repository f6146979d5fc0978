"""Image-folder datasets: flat or class-nested, ADM-style centre crop, seeded split.

Layouts: *flat* — images directly in the folder (unconditional: ``num_classes == 0``, label
``-1``); *class-nested* — one sub-directory per class (classes = sorted sub-directory names,
label = index; images anywhere below their class directory). Hidden entries are ignored, and a
folder holding both images and class directories is refused.

Preprocessing follows the ADM / guided-diffusion centre crop: halve with a BOX filter while the
short side is at least twice the target, resize with BICUBIC so the short side equals the
target, then crop the centre square. Images come out as float CHW tensors in [0, 1].

Fingerprint: sorted relative paths, file sizes and a content digest per file. The digest is
BLAKE2b over the file's size, its first 64 KiB and its last 64 KiB: the whole file for typical
dataset JPEGs (ImageNet averages ~110 KiB) and two reads for large ones, so fingerprinting a
million files costs a fraction of one decoding pass while catching replaced or re-encoded
files. An edit confined to the middle of a file larger than 128 KiB is not detected. The
digests run on a thread pool and only when ``fingerprint()`` is first called; with a
``digest_memo`` directory they are memoised by (size, mtime) so later runs only stat files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rdmx.data.base import RealData
from rdmx.errors import RdmxError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"})
DIGEST_WINDOW = 64 * 1024
CROP_METHOD = "adm-box-bicubic-center/1"


@dataclass(frozen=True)
class FolderListing:
    """The images of one folder: relative POSIX paths, labels and class names."""

    root: Path
    files: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_below(directory: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(p for p in (Path(dirpath) / f for f in sorted(filenames)) if _is_image(p))
    return found


def scan_image_folder(root: str | Path, class_names: Sequence[str] | None = None) -> FolderListing:
    """List a flat or class-nested image folder; ``class_names`` pins the class order (val sets)."""
    root = Path(root)
    if not root.is_dir():
        raise RdmxError(f"image folder {root} does not exist or is not a directory")
    top_images = sorted(p for p in root.iterdir() if _is_image(p))
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = [d for d in subdirs if _images_below(d)]
    if top_images and class_dirs:
        raise RdmxError(
            f"image folder {root} mixes images ({top_images[0].name}, ...) with class "
            f"directories ({class_dirs[0].name}/, ...); use one layout"
        )
    if class_dirs:
        names = [d.name for d in class_dirs]
        order = list(class_names) if class_names is not None else names
        unknown = sorted(set(names) - set(order))
        if unknown:
            raise RdmxError(f"image folder {root}: classes {unknown} are not among the training classes")
        files, labels = [], []
        for d in class_dirs:
            for p in _images_below(d):
                files.append(p.relative_to(root).as_posix())
                labels.append(order.index(d.name))
        return FolderListing(root, tuple(files), tuple(labels), tuple(order))
    if not top_images:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise RdmxError(f"no images found in {root} (looked for {exts})")
    if class_names:
        raise RdmxError(f"image folder {root} is flat but the training folder has classes")
    return FolderListing(root, tuple(p.name for p in top_images), (-1,) * len(top_images), ())


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM centre crop: BOX halvings while short side >= 2*size, BICUBIC to size, centre square."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    left = (image.size[0] - size) // 2
    top = (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: str | Path, size: int, channels: int = 3) -> torch.Tensor:
    """Decode, centre-crop and convert one image to a float (channels, size, size) tensor in [0, 1]."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
        raise RdmxError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
    arr = np.asarray(adm_center_crop(img, size), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageFolderDataset(torch.utils.data.Dataset):
    """(image, label) pairs for a subset of a folder listing."""

    def __init__(self, listing: FolderListing, indices: Sequence[int], size: int, channels: int = 3):
        if channels not in (1, 3):
            raise RdmxError(f"channels must be 1 or 3, got {channels}")
        self.listing = listing
        self.indices = [int(i) for i in indices]
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.indices)

    def path(self, i: int) -> Path:
        return self.listing.root / self.listing.files[self.indices[i]]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = load_image(self.path(i), self.size, self.channels)
        return image, torch.tensor(self.listing.labels[self.indices[i]], dtype=torch.long)


def split_indices(n: int, *, val_fraction: float = 0.0, val_count: int | None = None, seed: int = 0):
    """A seeded random split of ``range(n)`` into sorted (train, val) index arrays."""
    n_val = int(val_count) if val_count is not None else int(round(n * val_fraction))
    if not 0 <= n_val < n:
        raise RdmxError(f"cannot hold out {n_val} validation images from {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def file_digest(path: Path, size: int | None = None) -> str:
    """BLAKE2b of size + first and last ``DIGEST_WINDOW`` bytes (see the module docstring)."""
    h = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size if size is None else size
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        h.update(f.read(DIGEST_WINDOW))
        if size > DIGEST_WINDOW:
            f.seek(max(DIGEST_WINDOW, size - DIGEST_WINDOW))
            h.update(f.read())
    return h.hexdigest()


def _memo_file(memo_dir: Path, root: Path) -> Path:
    return memo_dir / f"digests-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}.json"


def _read_memo(path: Path | None) -> dict[str, list]:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError):
        return {}  # a damaged memo only costs a recomputation


def listing_digest(listing: FolderListing, threads: int = 8, memo_dir: str | Path | None = None) -> str:
    """One hash over every file's relative path, size and content digest, in sorted path order.

    With ``memo_dir``, per-file digests are memoised keyed by (size, mtime_ns): files whose
    size and modification time are unchanged are only stat-ed on later calls."""
    paths = sorted(listing.files)
    memo_path = _memo_file(Path(memo_dir), listing.root) if memo_dir is not None else None
    memo = _read_memo(memo_path)

    def one(rel: str) -> list:
        st = (listing.root / rel).stat()
        hit = memo.get(rel)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit
        return [st.st_size, st.st_mtime_ns, file_digest(listing.root / rel, st.st_size)]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        entries = list(pool.map(one, paths))
    if memo_path is not None:
        fresh = dict(zip(paths, entries))
        if fresh != memo:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_name(f".{memo_path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({"root": str(listing.root.resolve()), "files": fresh}, separators=(",", ":")))
            os.replace(tmp, memo_path)
    h = hashlib.sha256()
    for rel, (size, _, digest) in zip(paths, entries):
        h.update(f"{rel}\0{size}\0{digest}\n".encode())
    return h.hexdigest()


def image_folder(
    train_dir: str | Path,
    *,
    size: int,
    val_dir: str | Path | None = None,
    val_fraction: float = 0.02,
    val_count: int | None = None,
    seed: int = 0,
    channels: int = 3,
    digest_memo: str | Path | None = None,
    class_labels: str | Path | None = None,
) -> RealData:
    """RealData from an image folder; val is ``val_dir`` or a seeded split of ``train_dir``.

    ``digest_memo``: a directory where per-file content digests are memoised (see
    ``listing_digest``) so that fingerprinting a large folder again only stats its files.
    ``class_labels``: display names of the class folders (see :func:`read_class_labels`)."""
    if size < 1:
        raise RdmxError(f"image size must be positive, got {size}")
    listing = scan_image_folder(train_dir)
    if val_dir is not None:
        val_listing = scan_image_folder(val_dir, class_names=listing.class_names or None)
        train = ImageFolderDataset(listing, range(len(listing.files)), size, channels)
        val = ImageFolderDataset(val_listing, range(len(val_listing.files)), size, channels)
        split: dict = {"val_dir": True}
    else:
        train_idx, val_idx = split_indices(len(listing.files), val_fraction=val_fraction, val_count=val_count, seed=seed)
        val_listing = None
        train = ImageFolderDataset(listing, train_idx, size, channels)
        val = ImageFolderDataset(listing, val_idx, size, channels)
        split = {"val_indices": hashlib.sha256(np.asarray(val_idx, dtype=np.int64).tobytes()).hexdigest()}

    def identity() -> dict:
        return {
            "format": "image-folder/1",
            "crop": CROP_METHOD,
            "train": listing_digest(listing, memo_dir=digest_memo),
            "val": listing_digest(val_listing, memo_dir=digest_memo) if val_listing is not None else None,
            "split": split,
        }

    return RealData(
        train=train,
        val=val,
        num_classes=len(listing.class_names),
        class_names=listing.class_names,
        image_size=size,
        channels=channels,
        identity=identity,
        display_names=read_class_labels(class_labels, listing.class_names) if class_labels else (),
    )


def read_class_labels(path: str | Path, class_names: Sequence[str]) -> tuple[str, ...]:
    """Display names for ``class_names`` from ``path``: JSON ``{folder: name}`` or text lines
    ``<folder> <name>`` (ImageNet's ``LOC_synset_mapping.txt``: "n01440764 tench, Tinca tinca").
    The first comma-separated name is kept; a folder the file does not name keeps its own name."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RdmxError(f"class_labels: cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        try:
            mapping = {str(k): str(v) for k, v in json.loads(text).items()}
        except (ValueError, AttributeError) as exc:
            raise RdmxError(f"class_labels: {path} is not a JSON object of folder → name: {exc}") from None
    else:
        mapping = {}
        for line in text.splitlines():
            folder, _, name = line.strip().partition(" ")
            if folder:
                mapping[folder] = name.strip() or folder
    if class_names and not set(class_names) & set(mapping):
        raise RdmxError(f"class_labels: {path} names none of the class folders ({class_names[0]}, ...)")
    return tuple(mapping.get(c, c).split(",")[0].strip() or c for c in class_names)
