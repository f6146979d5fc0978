"""Files rdmx writes and later reads back: atomic writes, content checksums, verification.

Every file is written to a temporary name in its own folder (``.<name>.tmp-<pid>-<rand>``),
flushed to disk and moved into place with ``os.replace``: a file that exists is complete.
Files rdmx reads back carry a sha256 of their content, written with them:

* JSON files: a ``"sha256"`` field over the canonical JSON of the rest (``write_sealed_json``);
* safetensors files: ``sha256`` in the header metadata over every tensor's name, dtype, shape
  and bytes (``save_tensors``);
* torch checkpoints: a ``"sha256"`` entry over the canonical structure and every tensor's bytes
  (``save_torch``).

Reading verifies (``read_sealed_json``, ``load_tensors``, ``load_torch``): a file that cannot be
parsed or does not match its checksum is an :class:`IntegrityError` naming the file, what it
belongs to and how to rebuild it. Nothing damaged is ever used silently.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError

TEMP_MARK = ".tmp-"
SEAL_KEY = "sha256"


class IntegrityError(RdmxError):
    """A file rdmx wrote earlier is unreadable or does not match its checksum."""

    def __init__(self, path: str | Path, problem: str, what: str = "", remedy: str = ""):
        self.path = Path(path)
        self.problem = problem
        text = f"{path}: {problem}"
        if what:
            text += f" ({what})"
        if remedy:
            text += f"; {remedy}"
        super().__init__(text)


# -- atomic writes -----------------------------------------------------------------------
def temp_path(path: Path) -> Path:
    """A unique temporary name beside ``path`` (recognised by :func:`clean_stale_temps`)."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` then fsync and rename over ``path``; the temporary file never survives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(path)
    tmp = temp_path(path)
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full(exc):  # torch's "file write failed", safetensors' "os error 28", OSError ENOSPC alike
            raise RdmxError(f"the disk is full: {path} could not be written; free some space there, or point the "
                            f"output elsewhere (the file it replaces, if any, is intact)") from None
        raise
    return path


def disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def need_disk(path: str | Path, nbytes: int, what: str) -> None:
    """Refuse, before anything is written, to write ``nbytes`` where the disk has less free space
    (with 5 % and 16 MiB to spare): one message saying where, how much is needed and how much is free."""
    import shutil

    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if nbytes * 1.05 + (16 << 20) > free:
        raise RdmxError(f"not enough disk for {what} in {path}: {human_size(nbytes)} needed, {human_size(free)} free "
                        f"on that disk; free some space, or point it elsewhere (nothing was written)")


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested structure (this process's local shards)."""
    import torch

    total, stack = 0, [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Mapping):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, torch.Tensor):
            t = x.to_local() if hasattr(x, "to_local") else x
            total += t.numel() * t.element_size()
    return total


def refuse_link(path: Path) -> None:
    """rdmx never writes through a symbolic link it did not make (it could point anywhere)."""
    if path.is_symlink():
        raise RdmxError(f"{path} is a symbolic link (to {os.readlink(path)}); rdmx writes only files of its own "
                        f"there: remove the link")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    """Plain JSON for people and other tools (summaries, resolved recipes), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


TEMP_NAME = re.compile(r"\..+\.tmp-(\d+)-[0-9a-f]{8}")  # exactly what temp_path makes


def clean_stale_temps(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete temporary files left by killed rdmx writers: only names :func:`temp_path` makes
    (``.<name>.tmp-<pid>-<8 hex digits>``) whose process is gone, never through a link; returns
    what went. Anything else, however it is named, is the user's and stays."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f"**/.*{TEMP_MARK}*" if recursive else f".*{TEMP_MARK}*"
    gone = []
    for p in folder.glob(pattern):
        m = TEMP_NAME.fullmatch(p.name)
        if m and p.is_file() and not p.is_symlink() and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


# -- digests -----------------------------------------------------------------------------
def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _tensor_bytes(t) -> memoryview:
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def tensors_sha256(tensors: Mapping[str, Any]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(canonical([name, str(t.dtype), list(t.shape)]))
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _walk(obj: Any, tensors: list) -> Any:
    """The structure of ``obj`` with each tensor replaced by a placeholder; tensors collected."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return ["<tensor>", len(tensors) - 1, str(obj.dtype), list(obj.shape)]
    if isinstance(obj, Mapping):
        return {str(k): _walk(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v, tensors) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return "<nan>"
    return obj


def object_sha256(obj: Any) -> str:
    """sha256 of a nested structure of dicts, lists, scalars and tensors (a checkpoint)."""
    tensors: list = []
    skeleton = _walk(obj, tensors)
    h = hashlib.sha256(canonical(skeleton))
    for t in tensors:
        h.update(_tensor_bytes(t))
    return h.hexdigest()


# -- sealed JSON -------------------------------------------------------------------------
def seal(obj: Mapping[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in obj.items() if k != SEAL_KEY}
    return {**body, SEAL_KEY: hashlib.sha256(canonical(body)).hexdigest()}


def write_sealed_json(path: str | Path, obj: Mapping[str, Any]) -> Path:
    """JSON carrying the sha256 of its own content, written atomically."""
    return atomic_write_text(path, json.dumps(seal(obj), indent=2, sort_keys=True, default=str))


def jsonl_records(path: str | Path, label: str = "") -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of every non-blank line of a JSON-lines file; a line that
    is not JSON is an RdmxError ``"<label><path>, line <n>: invalid JSON (...)"``."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise RdmxError(f"{label}{path}, line {n}: invalid JSON ({exc.msg})") from None


def read_json(path: str | Path, *, what: str = "", remedy: str = "") -> Any:
    """Parse a JSON file; an unreadable one is an IntegrityError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise IntegrityError(path, f"not readable JSON ({type(exc).__name__}: {exc})", what, remedy) from None


def read_sealed_json(path: str | Path, *, what: str = "", remedy: str = "") -> dict[str, Any]:
    """A JSON object written by :func:`write_sealed_json`, verified."""
    obj = read_json(path, what=what, remedy=remedy)
    if not isinstance(obj, dict):
        raise IntegrityError(path, "not a JSON object", what, remedy)
    stored = obj.get(SEAL_KEY)
    if stored is None:
        raise IntegrityError(path, "carries no checksum (written by an older rdmx or edited by hand)", what, remedy)
    if seal(obj)[SEAL_KEY] != stored:
        raise IntegrityError(path, "content does not match its checksum (edited or corrupt)", what, remedy)
    return {k: v for k, v in obj.items() if k != SEAL_KEY}


# -- safetensors -------------------------------------------------------------------------
def save_tensors(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """safetensors with ``sha256`` (see :func:`tensors_sha256`) in its metadata, atomically."""
    from safetensors.torch import save_file

    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    need_disk(Path(path).parent, tensor_bytes(data), Path(path).name)
    meta = {**{k: str(v) for k, v in (metadata or {}).items()}, SEAL_KEY: tensors_sha256(data)}
    return atomic_write(path, lambda tmp: save_file(data, tmp, metadata=meta))


def load_tensors(path: str | Path, *, what: str = "", remedy: str = "", device: str = "cpu",
                 verify: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, metadata) of a file written by :func:`save_tensors`, verified."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise IntegrityError(path, f"not a readable safetensors file ({type(exc).__name__}: {exc})",
                             what, remedy) from None
    if verify:
        stored = meta.get(SEAL_KEY)
        if stored is None:
            raise IntegrityError(path, "carries no checksum (written by an older rdmx)", what, remedy)
        if tensors_sha256(tensors) != stored:
            raise IntegrityError(path, "tensor data does not match its checksum (corrupt)", what, remedy)
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, {k: v for k, v in meta.items() if k != SEAL_KEY}


# -- torch objects (checkpoints) ---------------------------------------------------------
def save_torch(path: str | Path, obj: Mapping[str, Any]) -> Path:
    """``torch.save`` of a dict with its content sha256 under ``"sha256"``, atomically."""
    import torch

    body = {k: v for k, v in obj.items() if k != SEAL_KEY}
    need_disk(Path(path).parent, tensor_bytes(body), Path(path).name)
    sealed = {**body, SEAL_KEY: object_sha256(body)}
    return atomic_write(path, lambda tmp: torch.save(sealed, tmp))


def load_torch(path: str | Path, *, what: str = "", remedy: str = "", verify: bool = True,
               mmap: bool = False) -> dict[str, Any]:
    """A dict written by :func:`save_torch` (``weights_only``: no code runs), verified; ``mmap``
    maps the tensors from the file (a 12 GB checkpoint is not copied into memory)."""
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle/zip/unpickler errors of a damaged file
        import pickle

        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):  # never torch's advice to unpickle
            raise IntegrityError(path, "holds Python objects other than tensors and plain data (a pickle payload); "
                                       "refused: rdmx never runs code from a file it reads", what, remedy) from None
        if path.stat().st_size == 0:
            raise IntegrityError(path, "is empty", what, remedy) from None
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise IntegrityError(path, f"not a torch file rdmx wrote ({type(exc).__name__}: {first})", what,
                             remedy) from None
    if not isinstance(obj, dict):
        raise IntegrityError(path, "does not hold a dictionary", what, remedy)
    if verify:
        stored = obj.get(SEAL_KEY)
        if stored is None:
            raise IntegrityError(path, "carries no checksum (written by an older rdmx)", what, remedy)
        body = {k: v for k, v in obj.items() if k != SEAL_KEY}
        if object_sha256(body) != stored:
            raise IntegrityError(path, "content does not match its checksum (corrupt)", what, remedy)
        return body
    return {k: v for k, v in obj.items() if k != SEAL_KEY}


def ensure_writable(folder: str | Path, what: str, remedy: str) -> Path:
    """Create ``folder`` and write a probe file in it, or raise one line: ``what: cannot write
    ... in FOLDER (reason); remedy``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".rdmx-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RdmxError(f"{what} in {folder} ({exc.strerror or exc}); {remedy}") from None
    return folder


class FolderLock:
    """An exclusive lock on a folder (``<folder>/.lock``, holding the owner's PID) for as long as a
    run uses it, through ``filelock``; the operating system releases it when the process ends,
    however it ends."""

    def __init__(self, folder: str | Path, enabled: bool = True):
        self.path = Path(folder) / ".lock"
        self.enabled = enabled
        self._lock = None

    def __enter__(self) -> FolderLock:
        if not self.enabled:
            return self
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        refuse_link(self.path)

        def own(fd: int) -> None:  # the holder's PID, for whoever finds the folder taken
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)

        lock = FileLock(self.path, timeout=0, thread_local=False, fallback_to_soft=False,
                        preserve_lock_file=True, on_acquired=own)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = self.path.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise RdmxError(f"{self.path.parent} is in use by another rdmx run (PID {holder}); wait for it "
                            f"to finish, or give this run another --out") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link planted after the check: never followed (O_NOFOLLOW)
                refuse_link(self.path)
            raise
        self._lock = lock
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
