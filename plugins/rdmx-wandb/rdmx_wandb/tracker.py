"""The ``wandb`` tracker: one W&B run per rdmx run, resumed under the same id.

What MLflow gets, W&B gets: the resolved recipe as the run's config, every metric by step, the
sample grids as images, ``resolved.toml`` and ``plugins.json`` as run files, and the summary.
Nested runs (a sweep's cells) are grouped under the sweep's run. ``mode = "offline"`` writes
everything under ``<dir>/wandb/offline-run-*`` with no network (``wandb sync`` uploads later).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError
from rdmx.files import ensure_writable
from rdmx.track.base import Tracker, flatten

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MAX_TAG = 64  # W&B's limit on a tag's length


def new_id() -> str:
    """A fresh W&B run id (8 lowercase letters and digits, as wandb's own)."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbTracker(Tracker):
    def __init__(self, config):
        try:
            import wandb
        except ImportError:
            raise RdmxError("tracking backend 'wandb' needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        self.config = config
        self._runs: list[Any] = []  # nested runs on top
        self.step = 0

    @property
    def run(self):
        return self._runs[-1]

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self._runs[-1].id if self._runs else None

    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        wandb, c = self.wandb, self.config
        folder = Path(c.dir or os.environ.get("WANDB_DIR") or ".").expanduser()
        ensure_writable(folder, "wandb: cannot write its files", "set tracking.dir (or $WANDB_DIR) to a writable folder")
        tags = dict(tags or {})
        group = c.group or (self._runs[-1].name if nested and self._runs else None) or tags.get("mlflow.parentRunId")
        labels = list(c.tags) + [f"{k.removeprefix('rdmx.')}:{v}"[:MAX_TAG] for k, v in tags.items()
                                 if k.startswith("rdmx.")]
        settings = wandb.Settings(x_disable_stats=not c.system_metrics, console="off", silent=True)
        try:
            run = self._init(folder, group, labels, settings, run_name, params, tags, run_id)
        except Exception as exc:  # noqa: BLE001 - a missing login is the common case: say what to do
            if "API key" in str(exc):
                raise RdmxError("wandb: no API key configured; run `wandb login`, or set tracking.mode = "
                                "\"offline\" (no network; `wandb sync` later)") from None
            raise
        self._runs.append(run)
        self.step = max(0, run.starting_step - 1) if run.resumed else 0
        return run.id

    def _init(self, folder, group, labels, settings, run_name, params, tags, run_id):
        wandb, c = self.wandb, self.config
        return wandb.init(
            project=c.project, entity=c.entity, dir=str(folder), mode=c.mode, group=group, tags=labels,
            id=run_id or new_id(), name=None if run_id else run_name, resume="allow",
            config={**dict(params or {}), "rdmx_tags": tags} if run_id is None else None,
            reinit="create_new", settings=settings,
        )

    def log_metrics(self, metrics, step):
        self.run.log({k: float(v) for k, v in metrics.items()}, step=int(step))
        self.step = max(self.step, int(step))

    def log_artifact(self, path: str | Path, subdir: str | None = None):
        path = Path(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            key = f"{subdir}/{path.stem}" if subdir else path.stem
            self.run.log({subdir or "images": self.wandb.Image(str(path), caption=key)}, step=self.step)
        else:  # a copy in the run's files (wandb would link to a file that may change later)
            dest = Path(self.run.dir) / (subdir or "") / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            self.run.save(str(dest), base_path=self.run.dir, policy="now")

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        flat = {k: v for k, v in flatten(dict(summary)).items() if isinstance(v, (int, float, str, bool))}
        self.run.summary.update(flat)

    def logged_steps(self) -> dict[str, int]:
        """Steps before a resumed run's next one are not logged again (W&B refuses a lower step)."""
        run = self.run
        if not run.resumed:
            return {}
        return {k: run.starting_step - 1 for k in run.summary.keys()}

    def end(self, status="FINISHED"):
        if not self._runs:
            return
        run = self._runs.pop()
        if status == "KILLED":
            run.mark_preempting()  # stopped on request (preemption): W&B shows it as such
        run.finish(exit_code=0 if status == "FINISHED" else 1)
