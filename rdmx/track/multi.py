"""Several trackers at once (``[tracking] backends = ["mlflow", "wandb"]``).

Each tracker is wrapped in its own :class:`rdmx.track.safe.SafeTracker`, so one that fails (a
server down, a folder that cannot be written) is retried, reported once and left behind while
the others go on. The run's id is every tracker's id in one string, ``name:id,name:id``, so a
resumed run (whose id its checkpoint keeps) continues each tracker's own run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdmx.track.base import Tracker

SEP, KV = ",", ":"


def split_ids(run_id: str | None, names: list[str]) -> dict[str, str | None]:
    """``"mlflow:ab,wandb:cd"`` → ``{"mlflow": "ab", "wandb": "cd"}``; a plain id (a run tracked by
    one backend before) belongs to the first tracker."""
    out: dict[str, str | None] = dict.fromkeys(names)
    if not run_id:
        return out
    if KV not in run_id:
        out[names[0]] = run_id
        return out
    for part in run_id.split(SEP):
        name, _, rid = part.partition(KV)
        if name in out and rid:
            out[name] = rid
    return out


def join_ids(ids: Mapping[str, str | None]) -> str | None:
    parts = [f"{n}{KV}{rid}" for n, rid in ids.items() if rid]
    return SEP.join(parts) or None


class MultiTracker(Tracker):
    """Forwards every call to each of ``trackers`` ((name, tracker) pairs), failures kept apart."""

    def __init__(self, trackers: list[tuple[str, Tracker]]):
        from rdmx.track.safe import SafeTracker

        self.names = [n for n, _ in trackers]
        self.trackers = {n: SafeTracker(t, label=n) for n, t in trackers}
        self._stack: list[str | None] = []

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return join_ids({n: t.run_id for n, t in self.trackers.items()})

    def _joined(self, value: Any) -> bool:
        """Whether a tag's value is a run id of this tracker (a sweep's parent run)."""
        parts = str(value).split(SEP)
        return all(p.partition(KV)[0] in self.names and p.partition(KV)[2] for p in parts)

    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        ids = split_ids(run_id, self.names)
        for name, tracker in self.trackers.items():
            own = {k: split_ids(v, self.names)[name] or v if self._joined(v) else v for k, v in (tags or {}).items()}
            tracker.start(run_name, params, tags=own, run_id=ids[name], nested=nested)
        return self.run_id

    def log_metrics(self, metrics, step):
        for tracker in self.trackers.values():
            tracker.log_metrics(metrics, step)

    def log_artifact(self, path: str | Path, subdir: str | None = None):
        for tracker in self.trackers.values():
            tracker.log_artifact(path, subdir)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        for tracker in self.trackers.values():
            tracker.log_summary(summary)

    def use_folder(self, out: Path) -> None:
        for tracker in self.trackers.values():
            tracker._call("using the run folder", lambda t=tracker: t.inner.use_folder(out))

    def end(self, status="FINISHED"):
        for tracker in self.trackers.values():
            tracker.end(status)

    def mark_abandoned(self, run_id: str) -> None:
        for name, rid in split_ids(run_id, self.names).items():
            if rid:
                self.trackers[name].mark_abandoned(rid)
