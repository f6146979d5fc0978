"""Tracker interface and the null tracker."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "l": [{"x": 2}]}`` → ``{"a.b": 1, "l.0.x": 2}`` (MLflow-safe keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            for i, x in enumerate(v):
                out.update(flatten(x, f"{key}.{i}"))
        else:
            out[key] = v
    return out


class Tracker(abc.ABC):
    """Where a run's parameters, metrics and artifacts go."""

    run_id: str | None = None

    @abc.abstractmethod
    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str] | None = None,
              run_id: str | None = None, nested: bool = False) -> str | None:
        """Start (or resume ``run_id``) a run; returns its id."""

    @abc.abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step``."""

    @abc.abstractmethod
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        """Attach a file to the run."""

    @abc.abstractmethod
    def end(self, status: str = "FINISHED") -> None:
        """Close the run."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Record the run's final summary (``summary.json``'s content)."""

    def use_folder(self, out: Path) -> None:
        """The run folder of the next run (trackers that write beside it may use it)."""

    def logged_steps(self) -> dict[str, int]:
        """The last step logged for each metric of the current (resumed) run; {} if unknown."""
        return {}

    def mark_abandoned(self, run_id: str) -> None:
        """Mark a run that a killed process left open as failed (no-op where runs have no status)."""


class NullTracker(Tracker):
    """Tracking switched off (``[tracking] backend = "none"``)."""

    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        return None

    def log_metrics(self, metrics, step):
        return None

    def log_artifact(self, path, subdir=None):
        return None

    def end(self, status="FINISHED"):
        return None


def build_null_tracker(config=None) -> NullTracker:
    """Factory of the ``none`` tracker."""
    return NullTracker()


def make_tracker(resolved) -> Tracker:
    """The tracker a resolved recipe's ``[tracking]`` table asks for: ``backend`` names a
    registered tracker whose validated config is the table's other keys; ``backends`` names
    several, tracked to at once (:class:`rdmx.track.multi.MultiTracker`)."""
    from rdmx.plugins import get_plugins

    tracking = resolved.recipe.tracking
    where = "tracking.backends" if tracking.backends else "tracking.backend"
    built = [(name, get_plugins().get("trackers", name, where=f"{resolved.source}: {where}").build(resolved.config(path)))
             for path, name, _ in tracking.blocks()]
    if len(built) == 1:
        return built[0][1]
    from rdmx.track.multi import MultiTracker

    return MultiTracker(built)
