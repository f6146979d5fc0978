"""TensorBoard tracking through ``torch.utils.tensorboard``.

A run's event files go in ``<run folder>/tensorboard`` (or ``<logdir>/<run name>`` when the
recipe names a ``logdir``); that folder is the run's id, so a resumed run and ``rdmx eval``
write to the same one. Parameters, the resolved recipe, ``plugins.json`` and the summary go to
TensorBoard's text tab, metrics to scalars (by step), sample grids to images; any other
artifact is copied into ``<folder>/artifacts``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError
from rdmx.files import ensure_writable
from rdmx.track.base import Tracker, flatten

TEXT_SUFFIXES = {".toml", ".json", ".md", ".txt", ".yaml", ".yml", ".log"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _writable(folder: Path) -> Path:
    return ensure_writable(folder, "tensorboard: cannot write event files", "set tracking.logdir to a writable folder")


def params_markdown(params: Mapping[str, Any]) -> str:
    """A two-column markdown table of the flattened parameters (TensorBoard renders markdown)."""
    rows = [f"| `{k}` | `{json.dumps(v) if not isinstance(v, str) else v}` |" for k, v in sorted(flatten(params).items())]
    return "\n".join(["| parameter | value |", "|---|---|", *rows])


def scalar_steps(folder: str | Path) -> dict[str, int]:
    """The last step of every scalar in a folder's event files (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: max(e.step for e in acc.Scalars(tag)) for tag in acc.Tags().get("scalars", [])}


class TensorBoardTracker(Tracker):
    def __init__(self, config):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RdmxError("tracking backend 'tensorboard' needs the tensorboard package: "
                            "pip install tensorboard (or rdmx[tensorboard])") from None
        self.SummaryWriter = SummaryWriter
        self.logdir = config.logdir
        self.flush_secs = config.flush_secs
        self.folder: Path | None = None  # the run folder, when the run has one
        self._stack: list[tuple[str, Any]] = []  # (run id = event folder, writer), nested runs on top
        self.step = 0

    def use_folder(self, out: Path) -> None:
        self.folder = Path(out)

    def _events_folder(self, run_name: str) -> Path:
        if self.logdir:
            return Path(self.logdir) / run_name
        if self.folder is not None:
            return self.folder / "tensorboard"
        return Path("tensorboard") / run_name

    @property
    def writer(self):
        return self._stack[-1][1]

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self._stack[-1][0] if self._stack else None

    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        where = _writable(Path(run_id) if run_id else self._events_folder(run_name)).resolve()
        writer = self.SummaryWriter(log_dir=str(where), flush_secs=self.flush_secs)
        self._stack.append((str(where), writer))
        self.folder = None  # a folder names one run only
        if run_id is None:
            if params:
                writer.add_text("params", params_markdown(params), 0)
            if tags:
                writer.add_text("tags", params_markdown(dict(tags)), 0)
        return self.run_id

    def log_metrics(self, metrics, step):
        for k, v in metrics.items():
            self.writer.add_scalar(k, float(v), int(step))
        self.step = max(self.step, int(step))

    def log_artifact(self, path: str | Path, subdir: str | None = None):
        path = Path(path)
        tag = f"{subdir}/{path.stem}" if subdir else path.name
        if path.suffix.lower() in IMAGE_SUFFIXES:
            tag = tag.rsplit(".", 1)[0] if not subdir else tag  # an image is named without its suffix
            import numpy as np
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
            self.writer.add_image(tag, arr, self.step, dataformats="HWC")
        elif path.suffix.lower() in TEXT_SUFFIXES:
            self.writer.add_text(tag, "    " + path.read_text(errors="replace").replace("\n", "\n    "), self.step)
        else:
            dest = Path(self.run_id) / "artifacts" / (subdir or "")
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / path.name)
        self.writer.flush()

    def log_summary(self, summary):
        text = json.dumps(dict(summary), indent=1, sort_keys=True, default=str)
        self.writer.add_text("summary", "    " + text.replace("\n", "\n    "), self.step)
        self.writer.flush()

    def logged_steps(self) -> dict[str, int]:
        self.writer.flush()
        return scalar_steps(self.run_id)

    def end(self, status="FINISHED"):
        if self._stack:
            self.writer.add_text("status", status, self.step)
            _, writer = self._stack.pop()
            writer.close()
