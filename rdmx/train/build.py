"""Build every component a resolved recipe names (recipe → registry → components)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from rdmx.components import build_checked, describe_encoder
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
    prompts: Any = None  # rdmx.data.prompts.PromptPool of a text-to-image generator, or None
    text_encoder: Any = None  # the text-joint law's frozen text tower, or None
    weights: str = "raw"  # the generator's weights in use: raw, or a checkpoint's EMA

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


def _build(plugins: Plugins, kind: str, path: str, name: str, resolved: ResolvedRecipe, *args, label=None):
    entry = plugins.get(kind, name, where=f"{resolved.source}: {path}.name")
    return build_checked(entry, resolved.config(path), *args, label=label, path=path, where=resolved.source)


def check_data(resolved: ResolvedRecipe, data) -> None:
    """What only the opened data can tell: labels for class-joint matching, a non-empty val split
    (found before any feature is extracted)."""
    r = resolved.recipe
    where = f"{resolved.source}: data ({r.data.name})"
    described = ", ".join(f"{k} = {v!r}" for k, v in resolved.config("data").model_dump().items()
                          if k in ("path", "val_path", "val_fraction", "val_count"))
    if r.joint.kind == "class" and getattr(data, "num_classes", 0) == 0:
        raise RdmxError(f"{resolved.source}: joint.kind = 'class' matches images with their class labels, but "
                        f"data '{r.data.name}' has no classes ({described or 'unlabelled'}: a class-nested folder "
                        f"has one sub-folder per class); use joint.kind = 'marginal'")
    for split in ("train", "val"):
        if len(getattr(data, split)) == 0:
            fields = {"val": "val_path / val_fraction / val_count", "train": "path"}[split]
            raise RdmxError(f"{where}: the {split} split is empty ({described}); set {fields} so that it "
                            f"holds images")


def data_info(data, prompts=None) -> DataInfo:
    """What the generator is told about the data; ``prompts`` (a PromptPool) makes it text-conditional."""
    if hasattr(data, "info"):
        info = data.info()
    else:
        shape = tuple(getattr(data, "sample_shape", (data.channels, data.image_size, data.image_size)))
        info = DataInfo(shape, data.num_classes, tuple(getattr(data, "display_names", ()) or data.class_names))
    if prompts is not None:
        info = replace(info, prompts=tuple(prompts.prompts))
    return info


def prompt_pool(plugins: Plugins, resolved: ResolvedRecipe, data):
    """The recipe's ``[prompts]`` pool; else, for captioned data, its train captions; else None."""
    if resolved.recipe.prompts is not None:
        return _build(plugins, "prompts", "prompts", resolved.recipe.prompts.name, resolved)
    captions = getattr(data, "captions", None)
    if captions:
        from rdmx.data.prompts import PromptPool

        return PromptPool(tuple(captions["train"]), ("data: train captions",))
    return None


def build_generator(resolved: ResolvedRecipe, device: torch.device, plugins: Plugins | None = None):
    """Only the recipe's generator (with the data info and prompt pool it needs), on ``device``."""
    plugins = plugins or get_plugins()
    r = resolved.recipe
    torch.manual_seed(r.seed)
    data = _build(plugins, "datasets", "data", r.data.name, resolved)
    info = data_info(data, prompt_pool(plugins, resolved, data))
    return _generator(plugins, resolved, info).to(device)


def _generator(plugins: Plugins, resolved: ResolvedRecipe, info: DataInfo):
    """The recipe's generator; ``generator.weights`` naming an ``rdmx export`` folder (safetensors)
    builds it with random weights and loads the export's exactly (rdmx.export.load_export)."""
    r = resolved.recipe
    weights = getattr(resolved.config("generator"), "weights", None)
    from rdmx.export import is_export, load_export

    if isinstance(weights, str) and is_export(weights):
        from rdmx.checkpoints import without_warm_start

        generator = _build(plugins, "generators", "generator", r.generator.name, without_warm_start(resolved), info)
        load_export(weights, generator)
        return generator
    return _build(plugins, "generators", "generator", r.generator.name, resolved, info)


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
    from rdmx import threads

    threads.announce()
    device = resolve_device(r.train.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)  # one GPU per torchrun process
    torch.manual_seed(r.seed)
    data = _build(plugins, "datasets", "data", r.data.name, resolved)
    check_data(resolved, data)
    prompts = prompt_pool(plugins, resolved, data)
    info = data_info(data, prompts)
    generator = _generator(plugins, resolved, info).to(device)
    encoders, roles = {}, {}
    for i, block in enumerate(r.battery.encoders):
        try:
            enc = _build(plugins, "encoders", f"battery.encoders[{i}]", block.name, resolved, label=block.key())
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
    text_encoder = None
    if r.joint.kind == "text":
        text_encoder = _build(plugins, "encoders", "joint.text_encoder", r.joint.text_encoder.name, resolved).to(device)
    return Components(data, info, generator, encoders, roles, estimator, balancer, metrics, device, prompts,
                      text_encoder)


def probe_components(c: Components, n: int = 2) -> list[str]:
    """Run ``n`` generated samples through every encoder (the ``--dry-run`` check): the generator's
    samples must have the data's shape and be finite, each encoder must return finite float32
    ``(n, spec.dim)`` features. Returns one line per component; raises RdmxError naming the label."""
    g = torch.Generator().manual_seed(0)
    gen = c.generator
    with torch.no_grad():
        noise = gen.sample_noise(n, g, c.device)
        cond = gen.sample_conditions(n, g, c.device)
        x = gen(noise, cond)
    if tuple(x.shape[1:]) != tuple(c.info.sample_shape) or not torch.isfinite(x).all():
        raise RdmxError(f"generator: {n} samples have shape {tuple(x.shape)} (finite: "
                        f"{bool(torch.isfinite(x).all())}); the data's samples are {tuple(c.info.sample_shape)}")
    lines = []
    for label, enc in c.encoders.items():
        with torch.no_grad():
            f = enc(x)
        who = describe_encoder(label, enc)
        if tuple(f.shape) != (n, enc.spec.dim):
            raise RdmxError(f"{who} returned features of shape {tuple(f.shape)} for {n} samples; its spec "
                            f"(and registration) say dim={enc.spec.dim}")
        if f.dtype != torch.float32 or not torch.isfinite(f).all():
            raise RdmxError(f"{who} returned {f.dtype} features, finite: {bool(torch.isfinite(f).all())}")
        lines.append(f"{who} [{c.roles[label]}]: dim {enc.spec.dim}, fingerprint {enc.fingerprint}")
    check_behaviour(c)
    lines.append("behaviour: every encoder frozen, deterministic, batch-independent, differentiable and not constant")
    return lines


def check_behaviour(c: Components, n: int = 3) -> None:
    """The encoders' behavioural contract (rdmx.testing.contract) on ``n`` random images of the
    generator's sample shape (not generated ones: a generator at its initialisation may make one
    image for every noise), before any feature is extracted or step taken: a violation is one
    RdmxError listing every encoder, property, number and likely fix."""
    from rdmx.testing.contract import behaviour_report

    if not c.info.is_image:
        return
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *c.info.sample_shape, generator=g).to(c.device)
    lines = behaviour_report(c.encoders, x)
    if lines:
        raise RdmxError("the battery's encoders misbehave (checked before any training):\n  " + "\n  ".join(lines))
