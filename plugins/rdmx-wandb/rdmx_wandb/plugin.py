"""Entry point of rdmx-wandb: registers the ``wandb`` tracker (wandb-free at import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rdmx.hookspecs import hookimpl
from rdmx.registry import ComponentConfig


class WandbConfig(ComponentConfig):
    """Options of ``[tracking] backend = "wandb"`` (or ``[tracking.wandb]`` among several)."""

    project: str = Field("rdmx", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (user or team); default: the account's")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="online, offline (no network; `wandb sync` later) or disabled; default $WANDB_MODE, "
                          "else online")
    dir: str | None = Field(None, description="folder of wandb's local files; default $WANDB_DIR, else ./wandb")
    group: str | None = Field(None, description="W&B group (a sweep's cells are grouped under the sweep's run)")
    tags: list[str] = Field(default_factory=list, description="W&B tags of every run")
    system_metrics: bool = Field(True, description="let wandb sample CPU/GPU use alongside the run")


@hookimpl
def rdmx_register_trackers(register):
    register("wandb", "rdmx_wandb.tracker:WandbTracker", config=WandbConfig,
             description="Weights & Biases: config, metrics by step, sample grids, recipe, summary "
                         "(online or offline)")
