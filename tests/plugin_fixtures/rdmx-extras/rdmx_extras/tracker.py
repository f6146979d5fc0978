"""A tracker writing metrics as JSON lines."""

import json

from rdmx.track.base import Tracker


class JsonlTracker(Tracker):
    def __init__(self, config):
        self.path = config.path

    def _write(self, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        self.run_id = run_id or run_name
        self._write({"event": "start", "run": run_name})
        return self.run_id

    def log_metrics(self, metrics, step):
        self._write({"event": "metrics", "step": step, **{k: float(v) for k, v in metrics.items()}})

    def log_artifact(self, path, subdir=None):
        self._write({"event": "artifact", "path": str(path)})

    def end(self, status="FINISHED"):
        self._write({"event": "end", "status": status})
