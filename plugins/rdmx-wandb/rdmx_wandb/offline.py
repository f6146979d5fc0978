"""Reading an offline W&B run back from its transaction log (``run-<id>.wandb``).

The log is wandb's own format: a 7-byte header (``:W&B``, magic 0xBEE1, version) then
LevelDB-log records in 32 KiB blocks, each record one ``wandb_internal_pb2.Record`` (wandb's
protobuf schema). :func:`read_offline_run` decodes the run's config, history rows, summary,
saved files and exit code: what ``wandb sync`` would upload.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # record header: crc32c (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[bytes]:
    """The raw records of a ``.wandb`` file (a record cut by a kill is left out)."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending = 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if len(chunk) < length:
            return
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def _value(item) -> Any:
    return json.loads(item.value_json)


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None
    preempting: bool = False

    def metric(self, key: str) -> dict[int, Any]:
        """{step: value} of one metric over the history."""
        return {row["_step"]: row[key] for row in self.history if key in row}


def read_offline_run(folder: str | Path) -> OfflineRun:
    """Decode ``<folder>/run-*.wandb`` (an ``offline-run-*`` folder) with wandb's protobuf schema."""
    from wandb.proto import wandb_internal_pb2 as pb

    logs = sorted(Path(folder).glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder}: no run-*.wandb transaction log")
    run = OfflineRun()
    for raw in records(logs[0]):
        rec = pb.Record.FromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.name, run.group = r.run_id, r.display_name, r.run_group
            run.tags = list(r.tags)
            for item in r.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "config":
            for item in rec.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "history":
            run.history.append({_key(i): _value(i) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                run.summary[_key(item)] = _value(item)
        elif kind == "files":
            run.files += [f.path for f in rec.files.files]
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
        elif kind == "preempting":
            run.preempting = True
    return run
