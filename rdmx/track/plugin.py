"""Registration of the builtin trackers (torch- and mlflow-free): ``mlflow`` (the default) and
``tensorboard`` and ``none``. A recipe picks one with ``[tracking] backend = NAME``; the table's other keys (except
``run_name``) are the tracker's options."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from rdmx.registry import ComponentConfig


class MlflowConfig(ComponentConfig):
    """MLflow through its local default store (``sqlite:///mlflow.db``) unless told otherwise."""

    uri: str | None = Field(None, description="tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    experiment: str = Field("rdmx", description="MLflow experiment name")


class TensorBoardConfig(ComponentConfig):
    """Event files for TensorBoard (``tensorboard --logdir runs``)."""

    logdir: str | None = Field(None, description="folder of every run's event folder (<logdir>/<run name>); "
                                                 "default: the run folder's tensorboard/")
    flush_secs: int = Field(30, ge=1, description="seconds between writes of buffered events to disk")


class NoTrackingConfig(ComponentConfig):
    """Tracking off. Accepts and ignores any other tracker's options, so that switching tracking
    off (``--set tracking.backend=none``) never needs the rest of the table deleted."""

    model_config = ConfigDict(extra="ignore")


def register_trackers(register) -> None:
    register("mlflow", "rdmx.track.mlflow_tracker:MlflowTracker", config=MlflowConfig,
             description="MLflow: parameters, per-step metrics, artifacts (the default)")
    register("tensorboard", "rdmx.track.tensorboard_tracker:TensorBoardTracker", config=TensorBoardConfig,
             description="TensorBoard event files: scalars by step, sample grids, parameters, recipe, summary")
    register("none", "rdmx.track.base:build_null_tracker", config=NoTrackingConfig,
             description="no tracking (summary.json and the run folder only)")
