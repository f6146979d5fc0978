"""Build every component a resolved recipe names (recipe → registry → components)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.plugins import Plugins, get_plugins
from rdmx.recipe import ResolvedRecipe
from rdmx.train.generator import DataInfo


@dataclass
class Components:
    data: Any
    info: DataInfo
    generator: torch.nn.Module
    encoders: dict[str, torch.nn.Module]  # label -> encoder (frozen)
    roles: dict[str, str]  # label -> "train" | "heldout"
    estimator: Any
    balancer: Any
    metrics: list[Any] = field(default_factory=list)
    device: torch.device = torch.device("cpu")

    @property
    def train_names(self) -> list[str]:
        return [k for k, r in self.roles.items() if r == "train"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise RdmxError(f"train.device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RdmxError(f"train.device: '{name}' asked for, but no CUDA device is available")
    return dev


def _build(plugins: Plugins, kind: str, path: str, name: str, resolved: ResolvedRecipe, *args):
    entry = plugins.get(kind, name, where=f"{resolved.source}: {path}.name")
    try:
        return entry.build(resolved.config(path), *args)
    except RdmxError as exc:
        raise RdmxError(f"{resolved.source}: {path} ({name}): {exc}") from None
    except (ValueError, TypeError, OSError) as exc:
        raise RdmxError(f"{resolved.source}: {path} ({name}, plugin {entry.plugin}): {exc}") from exc


def data_info(data) -> DataInfo:
    if hasattr(data, "info"):
        return data.info()
    shape = tuple(getattr(data, "sample_shape", (data.channels, data.image_size, data.image_size)))
    return DataInfo(shape, data.num_classes, tuple(data.class_names))


def hold_weights(enc, own: str | None, battery: str, where: str):
    """The encoder with its frozen weights in its own ``weights_dtype``, else the battery's; the
    battery-wide setting leaves encoders that compute in float32 (FID Inception) in float32."""
    dtype = own or battery
    if own is None and getattr(enc.spec, "dtype", "float32") == "float32":
        return enc
    try:
        return enc.hold_weights_in(dtype)
    except ValueError as exc:
        raise RdmxError(f"{where}.weights_dtype: {exc}") from None


def build_components(resolved: ResolvedRecipe, plugins: Plugins | None = None, local_rank: int = 0,
                     skip_encoder: Callable[[str, Exception], None] | None = None) -> Components:
    """Every component of ``resolved``. ``skip_encoder(label, error)``: report an encoder that fails
    to build and go on without it (benchmarks on machines missing a family); default: raise."""
    plugins = plugins or get_plugins()
    r = resolved.recipe
    device = resolve_device(r.train.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)  # one GPU per torchrun process
    torch.manual_seed(r.seed)
    data = _build(plugins, "datasets", "data", r.data.name, resolved)
    info = data_info(data)
    generator = _build(plugins, "generators", "generator", r.generator.name, resolved, info).to(device)
    encoders, roles = {}, {}
    for i, block in enumerate(r.battery.encoders):
        try:
            enc = _build(plugins, "encoders", f"battery.encoders[{i}]", block.name, resolved)
        except Exception as exc:  # noqa: BLE001 - reported by skip_encoder, or raised
            if skip_encoder is None:
                raise
            skip_encoder(block.key(), exc)
            continue
        enc = hold_weights(enc, block.weights_dtype, r.battery.weights_dtype, f"{resolved.source}: battery.encoders[{i}]")
        encoders[block.key()] = enc.to(device)
        roles[block.key()] = block.role
    estimator = _build(plugins, "estimators", "estimator", r.estimator.name, resolved)
    train_names = [k for k, v in roles.items() if v == "train"]
    balancer = _build(plugins, "balancers", "balancer", r.balancer.name, resolved, train_names)
    metrics = [
        _build(plugins, "metrics", f"eval.metrics[{i}]", m.name, resolved) for i, m in enumerate(r.eval.metrics)
    ]
    return Components(data, info, generator, encoders, roles, estimator, balancer, metrics, device)
