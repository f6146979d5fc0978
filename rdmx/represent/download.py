"""Downloading a weights file from a URL: progress, resume, and a sha256 check.

The transfer goes to ``<dest>.part``; a transfer that stops half way keeps it, and the next call
asks the server for the rest (HTTP Range; a server that ignores Range sends the whole file
again). Only a complete file whose sha256 matches (a full hash, or the prefix a torch.hub-style
file name carries) is renamed to ``dest``; a mismatch removes it.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path

from rdmx.errors import RdmxError
from rdmx.files import file_sha256

CHUNK = 1 << 20


def download(url: str, dest: str | Path, sha256: str | None = None, *, timeout: float = 20,
             progress: bool = True) -> Path:
    """``url`` → ``dest`` (atomically), resuming ``dest.part``; ``sha256`` (full or prefix) checked."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    total = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 - the preset's own URL
            if have and getattr(r, "status", 200) != 206:
                have = 0  # the server sent the whole file: start over
            length = r.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if have else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                    leave=False) as bar:
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and have):  # 416 on a resume: nothing left to send
            raise RdmxError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        got = part.stat().st_size if part.is_file() else 0
        raise RdmxError(f"download of {url} stopped after {got:,} bytes ({type(exc).__name__}: {exc}); {part} is "
                        f"kept and fetching again resumes it") from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise RdmxError(f"download of {url} stopped after {got:,} of {total:,} bytes; {part} is kept and fetching "
                        f"again resumes it")
    if sha256:
        actual = file_sha256(part)
        if not actual.startswith(sha256.lower()):
            part.unlink()
            raise RdmxError(f"download of {url}: its sha256 {actual[:16]}… is not the expected {sha256[:16]}…; the "
                            f"file was removed (a changed or corrupted upstream file)")
    part.replace(dest)
    return dest
