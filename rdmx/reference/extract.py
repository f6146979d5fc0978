"""Resumable, sharded feature extraction of a dataset through a set of frozen encoders.

Layout, one directory per (encoder, data, split)::

    <cache>/features/<encoder_fp>-<data_fp>-<split>/
        manifest.json             rows, dim, shard_rows, shards, complete
        shard-00000.safetensors   "features" (n, dim) float32, "labels" (n,) long

Shard ``s`` always holds dataset rows ``[s * shard_rows, (s + 1) * shard_rows)``, computed in
batches that start at the shard's first row, so a shard's bytes do not depend on which process
computed it or when. Each shard is written to a temporary file and moved into place with
``os.replace``: a shard file that exists is complete. A killed extraction therefore resumes by
skipping the shards already present. Under ``torch.distributed`` the shards are dealt
round-robin to the ranks; rank 0 writes the manifests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdmx.threads import worker_init

from rdmx.components import describe_encoder
from rdmx.errors import RdmxError
from rdmx.files import IntegrityError, clean_stale_temps, load_tensors, read_sealed_json, save_tensors, write_sealed_json

FORMAT = "rdmx-features/1"
MANIFEST = "manifest.json"
DEFAULT_SHARD_ROWS = 4096


def feature_dir(cache_dir: str | Path, encoder_fp: str, data_fp: str, split: str) -> Path:
    return Path(cache_dir) / "features" / f"{encoder_fp}-{data_fp}-{split}"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


# the one atomic writer of each kind lives in rdmx.files (kept under these names for callers)
atomic_write_json = write_sealed_json
atomic_save_tensors = save_tensors
REMEDY = "run `rdmx reference build RECIPE` (or `rdmx run`) again: damaged pieces are re-extracted"


def read_manifest(path: Path) -> dict[str, Any]:
    """The verified manifest of a feature directory."""
    return read_sealed_json(path / MANIFEST, what="a feature-extraction manifest", remedy=REMEDY)


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) unless torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist_rank_world()[1] > 1:
        torch.distributed.barrier()


@dataclass
class FeatureSet:
    """A directory of extracted features, read shard by shard."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, *, require_complete: bool = True) -> FeatureSet:
        path = Path(path)
        try:
            manifest = read_manifest(path)
        except FileNotFoundError:
            raise RdmxError(f"no extracted features at {path} (missing {MANIFEST})") from None
        if manifest.get("format") != FORMAT:
            raise RdmxError(f"{path}: unknown feature format {manifest.get('format')!r}")
        fs = cls(path, manifest)
        if require_complete and not manifest.get("complete"):
            done = sum(p.exists() for p in fs.shard_paths)
            raise RdmxError(
                f"features at {path} are incomplete ({done} of {fs.num_shards} shards); "
                "rerun the extraction (`rdmx reference build`) to finish them"
            )
        return fs

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def shard_rows(self) -> int:
        return int(self.manifest["shard_rows"])

    @property
    def num_shards(self) -> int:
        return int(self.manifest["shards"])

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / shard_name(i) for i in range(self.num_shards)]

    def shard(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Shard ``index``, verified against its checksum."""
        path = self.path / shard_name(index)
        if not path.is_file():
            raise IntegrityError(path, "missing although its manifest says the extraction is complete",
                                 "a feature shard", REMEDY)
        data, meta = load_tensors(path, what="a feature shard", remedy=REMEDY)
        if set(data) != {"features", "labels"} or data["features"].shape[1:] != (self.dim,):
            raise IntegrityError(path, "holds tensors of the wrong names or shapes", "a feature shard", REMEDY)
        if meta.get("set", self.path.name) != self.path.name or meta.get("shard", str(index)) != str(index):
            raise IntegrityError(path, f"is shard {meta.get('shard')} of {meta.get('set')}: copied or renamed over "
                                 f"this one", "a feature shard", REMEDY)  # (shards of older rdmx record no set)
        return data["features"], data["labels"]

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features, labels) one shard at a time, in row order."""
        for i in range(self.num_shards):
            yield self.shard(i)

    def take(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The given rows in the given order, reading only the shards that hold them."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.rows):
            raise IndexError(f"row index out of range for {self.rows} rows")
        feats = torch.empty(len(idx), self.dim, dtype=torch.float32)
        labels = torch.empty(len(idx), dtype=torch.long)
        which = idx // self.shard_rows
        for s in np.unique(which):
            pos = np.nonzero(which == s)[0]
            f, lab = self.shard(int(s))
            local = torch.from_numpy(idx[pos] - s * self.shard_rows)
            feats[torch.from_numpy(pos)] = f[local]
            labels[torch.from_numpy(pos)] = lab[local]
        return feats, labels

    def load_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = zip(*self.chunks())
        return torch.cat(feats), torch.cat(labels)


def iter_feature_chunks(path: str | Path) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(features (B, d) float32, labels (B,) long) read shard by shard from a complete directory."""
    return FeatureSet.open(path).chunks()


def _encoder_device(encoder: torch.nn.Module) -> torch.device:
    for t in list(encoder.parameters()) + list(encoder.buffers()):
        return t.device
    return torch.device("cpu")


def _prepare(directory: Path, base: dict[str, Any], who: str = "") -> dict[str, Any]:
    """Create or reuse the manifest (rank 0); an existing one fixes the shard size."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST
    if path.exists():
        manifest = read_manifest(directory)
        owner = {k: manifest.get(k) for k in ("encoder", "data", "split")}
        if owner != {k: base[k] for k in owner}:  # another feature set copied or renamed over this folder
            from rdmx.console import warn

            warn(f"{who + ': ' if who else ''}{directory} holds the features of encoder {owner['encoder']}, data "
                 f"{owner['data']}, split {owner['split']} (copied or renamed over it), not this extraction's: they "
                 "are removed and extracted again")
            for p in directory.glob("shard-*.safetensors"):
                p.unlink()
            path.unlink()
            manifest = {**base, "complete": False}
            atomic_write_json(path, manifest)
            return manifest
        if manifest.get("rows") != base["rows"] or manifest.get("dim") != base["dim"]:
            raise RdmxError(
                f"{who + ': ' if who else ''}{directory} holds {manifest.get('rows')} rows of dim "
                f"{manifest.get('dim')} cached by earlier code, but this extraction has {base['rows']} rows of "
                f"dim {base['dim']}: the data or the encoder's code changed without changing its fingerprint "
                "(an encoder whose features change must bump EncoderSpec.preset_version) — delete the directory"
            )
        return manifest
    manifest = {**base, "complete": False}
    atomic_write_json(path, manifest)
    return manifest


SPOT_ROWS = 4  # cached rows re-encoded before a cache is reused
SPOT_RTOL = 0.05  # relative to the feature norm: loose for bf16 encoders, far below any code change


def _stale(directory: Path, encoder, dataset, who: str, rank: int) -> bool:
    """Whether the first cached rows differ from what the encoder computes now (its code changed
    without a new fingerprint); rank 0 then removes the cache, with a warning saying so."""
    rows = min(SPOT_ROWS, len(dataset))
    try:
        cached = FeatureSet.open(directory).shard(0)[0][:rows]
    except (RdmxError, OSError):
        return False  # a damaged cache is repaired elsewhere (repair_features)
    images = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(rows)]).to(_encoder_device(encoder))
    encoder.rdmx_spot_check = True  # an encoder (e.g. a test's counter) can tell this from extraction
    try:
        with torch.inference_mode():
            now = encoder(images).float().cpu()
    finally:
        encoder.rdmx_spot_check = False
    if now.shape != cached.shape:
        err = float("inf")
    else:
        err = ((now - cached).norm(dim=1) / cached.norm(dim=1).clamp_min(1e-6)).max().item()
    if err <= SPOT_RTOL:
        return False
    if rank == 0:
        from rdmx.console import warn

        warn(f"{describe_encoder(who, encoder)}: its cached features in {directory} differ from what its code "
             f"computes now (relative {err:.3g} on the first {rows} rows): its code changed without a new "
             f"fingerprint (bump EncoderSpec.preset_version when you change an encoder's features); they are "
             f"extracted again")
        for p in directory.glob("shard-*.safetensors"):
            p.unlink()
        (directory / MANIFEST).unlink(missing_ok=True)
    _barrier()
    return True


def _shard_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def _recover_manifest(directory: Path, rows: int, dim: int) -> dict[str, Any] | None:
    """A manifest rebuilt from the shards' own headers (their first row tells the shard size)."""
    sizes = set()
    for p in sorted(directory.glob("shard-*.safetensors")):
        try:
            meta = _shard_header(p)
            index, first = int(meta["shard"]), int(meta["first_row"])
        except Exception:  # noqa: BLE001 - an unreadable shard is redone anyway
            continue
        if index > 0:
            sizes.add(first // index)
        elif int(meta.get("rows", 0)) < rows:
            sizes.add(int(meta["rows"]))
    shard_rows = sizes.pop() if len(sizes) == 1 else DEFAULT_SHARD_ROWS
    if sizes:  # inconsistent shards: start the directory over
        return None
    enc, _, rest = directory.name.partition("-")
    data_fp, _, split = rest.partition("-")
    return {"format": FORMAT, "encoder": enc, "data": data_fp, "split": split, "rows": rows, "dim": dim,
            "shard_rows": shard_rows, "shards": -(-rows // shard_rows), "complete": False}


def repair_features(directory: str | Path, *, rows: int, dim: int) -> list[str]:
    """Verify one feature directory and leave it resumable; one note per repair.

    An unreadable or edited manifest is rebuilt from the shard headers; a shard that is missing,
    unreadable, of the wrong shape or not matching its checksum is deleted and the manifest
    marked incomplete, so the next :func:`extract_features` recomputes exactly those shards."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    notes = []
    clean_stale_temps(directory)
    try:
        manifest = read_manifest(directory)
    except FileNotFoundError:
        return []
    except IntegrityError as exc:
        manifest = _recover_manifest(directory, rows, dim)
        if manifest is None:
            for p in directory.glob("shard-*.safetensors"):
                p.unlink()
            (directory / MANIFEST).unlink(missing_ok=True)
            return [f"{exc}: its shards disagree on their size; the directory is extracted again"]
        write_sealed_json(directory / MANIFEST, manifest)
        notes.append(f"{exc}: rebuilt from the shard headers")
    fs = FeatureSet(directory, manifest)
    redo = []
    for i in range(fs.num_shards):
        path = directory / shard_name(i)
        if not path.exists():
            if manifest.get("complete"):
                redo.append(i)
                notes.append(f"{path}: missing although its manifest says complete; extracting it again")
            continue
        try:
            feats, labels = fs.shard(i)
            want = min((i + 1) * fs.shard_rows, fs.rows) - i * fs.shard_rows
            if feats.shape[0] != want or labels.shape != (want,):
                raise IntegrityError(path, f"holds {feats.shape[0]} rows, not {want}", "a feature shard", REMEDY)
        except IntegrityError as exc:
            path.unlink(missing_ok=True)
            redo.append(i)
            notes.append(f"{exc}: deleted, extracting it again")
    if redo and manifest.get("complete"):
        write_sealed_json(directory / MANIFEST, {**manifest, "complete": False})
    return notes


def extract_features(
    encoders: Mapping[str, torch.nn.Module],
    dataset: torch.utils.data.Dataset,
    *,
    cache_dir: str | Path,
    data_fingerprint: str,
    split: str,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Path]:
    """Extract (or finish extracting) every encoder's features of ``dataset``; name -> directory.

    ``encoders`` map names to rdmx Encoders (each with ``.fingerprint`` and ``.dim``); images
    go to each encoder's own device. ``on_shard(index)`` is called after a shard is stored for
    every encoder. Returns immediately when every directory is already complete.
    """
    rank, world = dist_rank_world()
    n = len(dataset)
    if n == 0:
        raise RdmxError(f"the {split} split is empty: nothing to extract")
    dirs = {name: feature_dir(cache_dir, enc.fingerprint, data_fingerprint, split) for name, enc in encoders.items()}
    unique = {dirs[name]: enc for name, enc in encoders.items()}  # one pass per fingerprint
    names = {dirs[name]: name for name in encoders}  # how errors name each directory's encoder

    def complete(d: Path) -> bool:
        """Complete, and this extraction's (not a feature set copied or renamed over the folder)."""
        try:
            m = read_manifest(d)
        except FileNotFoundError:
            return False
        own = (m.get("encoder"), m.get("data"), m.get("split")) == (unique[d].fingerprint, data_fingerprint, split)
        return bool(m.get("complete")) and own

    todo = {d: enc for d, enc in unique.items() if not complete(d)}
    for d, enc in unique.items():  # cached features the encoder's code no longer computes: extracted again
        if d not in todo and _stale(d, enc, dataset, names[d], rank):
            todo[d] = enc
    if not todo:
        return dirs
    if rank == 0:
        for d, enc in todo.items():
            base = {"format": FORMAT, "encoder": enc.fingerprint, "data": data_fingerprint, "split": split,
                    "rows": n, "dim": int(enc.dim), "shard_rows": int(shard_rows),
                    "shards": -(-n // shard_rows)}
            _prepare(d, base, describe_encoder(names[d], enc))
            clean_stale_temps(d)
    _barrier()
    manifests = {d: read_manifest(d) for d in todo}
    rows_per = {m["shard_rows"] for m in manifests.values()}
    if len(rows_per) != 1:  # directories started earlier with different shard sizes: go one by one
        for d, enc in todo.items():
            name = next(k for k, v in dirs.items() if v == d)
            extract_features({name: enc}, dataset, cache_dir=cache_dir, data_fingerprint=data_fingerprint,
                             split=split, shard_rows=manifests[d]["shard_rows"], batch_size=batch_size,
                             num_workers=num_workers, progress=progress, on_shard=on_shard)
        return dirs
    shard_rows = rows_per.pop()
    num_shards = -(-n // shard_rows)
    missing = {s: [d for d in todo if not (d / shard_name(s)).exists()] for s in range(rank, num_shards, world)}
    missing = {s: ds for s, ds in missing.items() if ds}
    _run_shards(todo, dataset, missing, shard_rows, batch_size, num_workers, progress and rank == 0, split, on_shard,
                names)
    _barrier()
    if rank == 0:
        for d, manifest in manifests.items():
            absent = [s for s in range(num_shards) if not (d / shard_name(s)).exists()]
            if absent:
                raise RdmxError(f"{d}: shards {absent[:5]} were not written; rerun the extraction")
            atomic_write_json(d / MANIFEST, {**manifest, "complete": True})
    _barrier()
    return dirs


@contextlib.contextmanager
def _plain_worker_errors():
    """A user error raised in a DataLoader worker (e.g. an unreadable image) reaches the main process
    wrapped in the worker's traceback text; give back its own one-line message."""
    try:
        yield
    except RdmxError as exc:
        text = str(exc)
        if "DataLoader worker" not in text:
            raise
        lines = [ln for ln in text.splitlines() if ln.startswith(("rdmx.errors.", "RdmxError:"))]
        raise RdmxError(lines[-1].split(": ", 1)[1] if lines else text.splitlines()[0]) from None


def _run_shards(todo, dataset, missing, shard_rows, batch_size, num_workers, progress, split, on_shard,
                names=None) -> None:
    """Compute the missing shards: batches never cross a shard boundary. Features of the wrong
    shape or with non-finite values stop the extraction with the encoder named."""
    from tqdm.auto import tqdm

    n = len(dataset)
    plan = []  # (shard, first row, last row, is last batch of shard)
    for s in sorted(missing):
        lo, hi = s * shard_rows, min((s + 1) * shard_rows, n)
        starts = list(range(lo, hi, batch_size))
        plan.extend((s, a, min(a + batch_size, hi), a == starts[-1]) for a in starts)
    if not plan:
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[list(range(a, b)) for _, a, b, _ in plan],
        num_workers=num_workers,
        pin_memory=any(_encoder_device(e).type == "cuda" for e in todo.values()),
        worker_init_fn=worker_init,  # one thread per worker process (rdmx.threads)
    )
    bar = tqdm(total=sum(b - a for _, a, b, _ in plan), unit="img", unit_scale=True,
               desc=f"features[{split}]", disable=not progress, dynamic_ncols=True)
    parts: dict[Path, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []
    with bar, torch.inference_mode(), _plain_worker_errors():
        for (s, a, b, last), (images, batch_labels) in zip(plan, loader):
            for d in missing[s]:
                enc = todo[d]
                f = enc(images.to(_encoder_device(enc), non_blocking=True))
                who = describe_encoder((names or {}).get(d, getattr(enc.spec, "name", "?")), enc)
                if f.shape != (b - a, enc.dim):
                    raise RdmxError(f"{who} returned features of shape {tuple(f.shape)} for {b - a} {split} "
                                    f"images, expected ({b - a}, {enc.dim}) from its spec (dim={enc.dim})")
                if not torch.isfinite(f).all():
                    bad = int((~torch.isfinite(f)).any(dim=1).sum())
                    raise RdmxError(f"{who} returned non-finite features (NaN or inf) for {bad} of {b - a} real "
                                    f"{split} images (rows {a}..{b - 1}); nothing was cached for them")
                parts.setdefault(d, []).append(f.float().cpu())
            labels.append(torch.as_tensor(batch_labels, dtype=torch.long).reshape(-1))
            bar.update(b - a)
            if last:
                lab = torch.cat(labels)
                for d in missing[s]:
                    meta = {"shard": str(s), "first_row": str(s * shard_rows), "rows": str(len(lab)),
                            "shard_rows": str(shard_rows), "set": d.name}
                    atomic_save_tensors(d / shard_name(s), {"features": torch.cat(parts.pop(d)), "labels": lab}, meta)
                labels = []
                if on_shard is not None:
                    on_shard(s)
