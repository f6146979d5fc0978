"""Registration of the builtin trackers (torch- and mlflow-free): ``mlflow`` (the default) and
``none``. A recipe picks one with ``[tracking] backend = NAME``; the table's other keys (except
``run_name``) are the tracker's options."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from rdmx.registry import ComponentConfig


class MlflowConfig(ComponentConfig):
    """MLflow through its local default store (``sqlite:///mlflow.db``) unless told otherwise."""

    uri: str | None = Field(None, description="tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    experiment: str = Field("rdmx", description="MLflow experiment name")


class NoTrackingConfig(ComponentConfig):
    """Tracking off. Accepts and ignores any other tracker's options, so that switching tracking
    off (``--set tracking.backend=none``) never needs the rest of the table deleted."""

    model_config = ConfigDict(extra="ignore")


def register_trackers(register) -> None:
    register("mlflow", "rdmx.track.mlflow_tracker:MlflowTracker", config=MlflowConfig,
             description="MLflow: parameters, per-step metrics, artifacts (the default)")
    register("none", "rdmx.track.base:build_null_tracker", config=NoTrackingConfig,
             description="no tracking (summary.json and the run folder only)")
