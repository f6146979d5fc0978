"""Tracking that never stops training.

:class:`SafeTracker` wraps any tracker. Each call is retried (``tries`` attempts with growing
pauses); a call that still fails is reported once as a warning and the run goes on: metrics of
failed calls are kept in a bounded buffer and sent with the next call that succeeds, and a
tracker that cannot even start leaves the run untracked (with a warning) rather than failed.

Whatever the tracker does, every metric row is also appended to ``metrics.jsonl`` in the run
folder, so a run's numbers survive any tracking outage.

A resumed run re-executes the steps between its last checkpoint and the kill. Values already
logged for a (metric, step) are not logged again: the tracker reports the last step it holds
for each metric (``Tracker.logged_steps``) and those rows are skipped, so a resumed run's
history has no duplicate steps (the re-executed steps reproduce the same values; see the
bit-exact resume test).
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rdmx.console import warn
from rdmx.track.base import Tracker

BUFFER_ROWS = 100_000


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


class LocalMetrics:
    """``metrics.jsonl``: one JSON row ``{"step": s, "metric": value, ...}`` per logging call."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def rows(self) -> list[dict[str, Any]]:
        """The file's rows; a line cut by a kill or damaged (not a JSON object with an int step) is left out."""
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_bytes().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # also undecodable bytes
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
        return rows

    def last_steps(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for row in self.rows():
            step = row.pop("step")
            for k in row:
                last[k] = max(last.get(k, step), step)
        return last

    def rewind(self, step: int | None) -> None:
        """Keep the rows of steps up to ``step`` only (the checkpoint a run resumes from; None: a run
        that starts over keeps none), rewritten atomically: the file then holds this run's rows,
        never those of a run started over (``--fresh``) or of steps a killed process logged past its
        last checkpoint."""
        from rdmx.files import atomic_write_text

        if not self.path.is_file():
            return
        if step is None:
            self.path.unlink()
            return
        kept = [json.dumps(r, sort_keys=True) + "\n" for r in self.rows() if r["step"] <= step]
        atomic_write_text(self.path, "".join(kept))

    def append(self, metrics: Mapping[str, float], step: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **metrics}, sort_keys=True) + "\n")


class SafeTracker(Tracker):
    """A tracker whose failures are retried, buffered and reported, never raised (see module doc)."""

    def __init__(self, inner: Tracker, local: Path | None = None, tries: int = 3, pause: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, label: str = ""):
        self.inner = inner
        self.label = f"tracking ({label})" if label else "tracking"
        self.local = LocalMetrics(local) if local is not None else None
        self.tries, self.pause, self.sleep = tries, pause, sleep
        self.pending: deque[tuple[dict[str, float], int]] = deque(maxlen=BUFFER_ROWS)
        self.broken = False  # the inner tracker could not start: the run is tracked locally only
        self.warned: set[str] = set()
        self.skip_until: dict[str, int] = {}
        self.local_skip: dict[str, int] = {}

    # -- plumbing --------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        err: BaseException | None = None
        for attempt in range(self.tries):
            try:
                return True, fn()
            except Exception as exc:  # noqa: BLE001 - a tracking failure must not end the run
                err = exc
                if attempt + 1 < self.tries:
                    self.sleep(self.pause * (2**attempt))
        if what not in self.warned:
            self.warned.add(what)
            warn(f"{self.label}: {what} failed after {self.tries} tries ({type(err).__name__}: {err}); "
                 f"training goes on" + (f", metrics are kept in {self.local.path}" if self.local else ""))
        return False, None

    def use_folder(self, out: Path, resume_step: int | None = None) -> None:
        """Write the next run's metrics to ``out/metrics.jsonl``, which keeps the rows up to
        ``resume_step`` (the checkpoint's step; None: the run starts over and keeps none)."""
        self.local = LocalMetrics(Path(out) / "metrics.jsonl")
        self.local.rewind(resume_step)
        self.attach_folder(out)

    def attach_folder(self, out: Path) -> None:
        """Tell the tracker the next run's folder (TensorBoard writes its events there)."""
        self._call("using the run folder", lambda: self.inner.use_folder(Path(out)))

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return None if self.broken else self.inner.run_id

    # -- the Tracker interface -------------------------------------------------------------
    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        if self.local is not None:
            self.local_skip = self.local.last_steps()
        ok, rid = self._call("starting the run", lambda: self.inner.start(run_name, params, tags=tags,
                                                                           run_id=run_id, nested=nested))
        self.broken = not ok
        if ok and run_id is not None:
            ok, steps = self._call("reading the resumed run's history", lambda: self.inner.logged_steps())
            self.skip_until = dict(steps or {})
        return rid if ok else None

    def log_metrics(self, metrics, step):
        clean = _finite(metrics)
        fresh_local = {k: v for k, v in clean.items() if step > self.local_skip.get(k, -1)}
        if self.local is not None and fresh_local:
            try:
                self.local.append(fresh_local, step)
            except OSError as exc:
                if "local" not in self.warned:
                    self.warned.add("local")
                    warn(f"cannot write {self.local.path}: {exc}")
        fresh = {k: v for k, v in clean.items() if step > self.skip_until.get(k, -1)}
        if self.broken:
            return
        if fresh:
            self.pending.append((fresh, int(step)))
        while self.pending:
            rows, s = self.pending[0]
            ok, _ = self._call("logging metrics", lambda rows=rows, s=s: self.inner.log_metrics(rows, s))
            if not ok:
                return
            self.pending.popleft()

    def log_artifact(self, path, subdir=None):
        if not self.broken:
            self._call(f"storing the artifact {Path(path).name}", lambda: self.inner.log_artifact(path, subdir))

    def log_summary(self, summary):
        if not self.broken:
            self._call("storing the summary", lambda: self.inner.log_summary(summary))

    def end(self, status="FINISHED"):
        if self.broken:
            return
        if self.pending:
            self.log_metrics({}, 0)  # a last try for what is buffered
        if self.pending:
            warn(f"{self.label}: {sum(len(r) for r, _ in self.pending)} metric values could not be sent; "
                 f"they are in {self.local.path if self.local else 'no file'}")
        self._call("closing the run", lambda: self.inner.end(status))

    def mark_abandoned(self, run_id: str) -> None:
        if not self.broken:
            self._call("marking an abandoned run failed", lambda: self.inner.mark_abandoned(run_id))
