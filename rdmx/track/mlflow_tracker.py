"""MLflow tracking through its default local store (or the recipe's / MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError
from rdmx.track.base import Tracker, flatten

MAX_PARAM_VALUE = 6000  # MLflow's limit on a parameter value
MAX_PARAM_KEY = 250
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def safe_key(key: str) -> str:
    """MLflow allows alphanumerics, _ - . space : / in names; anything else becomes _."""
    return _BAD_KEY_CHARS.sub("_", key)[:MAX_PARAM_KEY]


def tracking_uri(config_uri: str | None) -> str:
    """Recipe's uri, else $MLFLOW_TRACKING_URI, else MLflow's local default (sqlite:///mlflow.db)."""
    if config_uri:
        return config_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def param_items(params: Mapping[str, Any]) -> dict[str, str]:
    """Flattened parameters; over-long values are cut with a marker (the full recipe is an artifact)."""
    out = {}
    for k, v in flatten(params).items():
        s = str(v)
        if len(s) > MAX_PARAM_VALUE:
            s = s[: MAX_PARAM_VALUE - 40] + f"...[truncated, {len(s)} chars]"
        out[safe_key(k)] = s
    return out


PROBE_TIMEOUT_S = 5
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when an http(s) tracking server does not answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # noqa: S310
            return
    except urllib.error.HTTPError:
        return  # it answered (a server without /health still is one)
    except Exception as exc:  # noqa: BLE001
        raise RdmxError(f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}: {exc})") from None


@contextlib.contextmanager
def store_lock(uri: str):
    """Serialise store creation for a local SQLite file: concurrent first runs otherwise race on its
    schema ("table ... already exists")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(db.with_name(f".{db.name}.lock"), preserve_lock_file=True):
        yield


class MlflowTracker(Tracker):
    def __init__(self, config):
        import mlflow

        self.mlflow = mlflow
        self.uri = tracking_uri(config.uri)
        self.experiment = config.experiment
        self._active: list[str] = []
        if self.uri.startswith(("http://", "https://")):
            for k, v in HTTP_ENV.items():  # bound every call: no minutes of silent retries
                os.environ.setdefault(k, v)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        mlflow = self.mlflow
        try:
            if self.uri.startswith(("http://", "https://")):
                probe_server(self.uri)
            with store_lock(self.uri):
                mlflow.set_tracking_uri(self.uri)
                mlflow.set_experiment(self.experiment)
                run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=nested,
                                       tags=dict(tags or {}))
        except RdmxError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise RdmxError(f"MLflow tracking at {self.uri!r} failed to start a run: {exc}") from exc
        self.run_id = run.info.run_id
        self._active.append(self.run_id)
        if params and run_id is None:
            items = list(param_items(params).items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
        return self.run_id

    def log_metrics(self, metrics, step):
        clean = {safe_key(k): float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if clean:
            self.mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, subdir: str | None = None):
        self.mlflow.log_artifact(str(path), artifact_path=subdir)

    def log_summary(self, summary):
        self.mlflow.log_dict(dict(summary), "summary.json")

    def logged_steps(self) -> dict[str, int]:
        client = self.client()
        run = client.get_run(self.run_id)
        return {k: max((m.step for m in client.get_metric_history(self.run_id, k)), default=-1)
                for k in run.data.metrics}

    def mark_abandoned(self, run_id: str) -> None:
        client = self.client()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")

    def end(self, status="FINISHED"):
        if self._active:
            self.mlflow.end_run(status=status)
            self._active.pop()
            self.run_id = self._active[-1] if self._active else None
