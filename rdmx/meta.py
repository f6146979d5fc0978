"""Typed registration metadata: one pydantic model per component kind.

A hook registers a component with ``register(name, factory, config=Model, description=...,
**meta)``; the keyword arguments ``**meta`` are validated by the model of the hook's kind
(:data:`META_MODELS`). Unknown keys and wrong types are errors that name the plugin. The
models are strict: ``dim="128"`` or ``dim=128.0`` is refused, not coerced.

Values that depend on the component's options may be given as a function of the validated
config, e.g. ``dim=lambda c: c.cells ** 2 * c.bins`` (fields marked *of config* below); a
zero-argument function is evaluated lazily where marked (``weights_available``: a file-system
check, so ``rdmx list`` stays instant). ``COLUMNS`` are the fields ``rdmx list KIND`` shows.

Like timm's ``PretrainedCfg``, the metadata travels with the registered entry: listing, weight
fetching (``rdmx weights``), the encoder contract check, ``--dry-run`` and the memory check of
``rdmx show`` read it. Everything here is torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator


@runtime_checkable
class WeightSource(Protocol):
    """Where pretrained weights come from (``rdmx.represent.presets.HFSource`` / ``URLSource``)."""

    def locate(self) -> Any:
        """The local copy (path, revision), or None when not cached."""

    def describe(self) -> str:
        """Where the weights are fetched from, for messages."""

    def fetch(self) -> Any:
        """Download into the local cache."""


OfConfigInt = int | Callable[[Any], int]


def tuples_from_lists(model: type[BaseModel], data: Any) -> Any:
    """TOML and keyword callers give arrays as lists: turn them into tuples where the model's
    field is a tuple (strict models refuse a list for a tuple otherwise)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None or not isinstance(value, list):
            continue
        ann = field.annotation
        options = (ann, *getattr(ann, "__args__", ()))
        if any(getattr(a, "__origin__", a) is tuple for a in options):
            out[key] = tuple(value)
    return out


class ComponentMeta(BaseModel):
    """Base of the metadata models: strict, frozen, unknown keys refused.

    Read like a mapping too (``meta["dim"]``, ``meta.get("dim")``, ``"dim" in meta`` — the last
    is true for keys the plugin gave)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True,
                              allow_inf_nan=False)

    COLUMNS: ClassVar[tuple[str, ...]] = ()
    OF_CONFIG: ClassVar[frozenset[str]] = frozenset()  # fields that may be functions of the config

    @model_validator(mode="before")
    @classmethod
    def _tuples(cls, data: Any) -> Any:
        return tuples_from_lists(cls, data)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, default) if key in type(self).model_fields else default
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.model_fields_set

    def resolve(self, key: str, config: Any = None) -> Any:
        """The value of ``key`` for a validated ``config``: functions of the config are called
        with it, zero-argument functions are called; None when it cannot be known."""
        value = self.get(key)
        if not callable(value) or isinstance(value, type):
            return value
        if key in self.OF_CONFIG:
            return None if config is None else value(config)
        return value()


class WeightsMeta(ComponentMeta):
    """Fields of components that may load pretrained weights (encoders, generators, metrics)."""

    family: str = Field("", description="library or family it comes from: timm, open_clip, builtin, ...")
    checkpoint: str = Field("", description="what the weights are: hub id, file name, '(random init)', '(none)'")
    weights: Literal["pretrained", "random", "none"] = Field(
        "none", description="pretrained (downloaded weights), random (seeded init) or none (no parameters)")
    weights_available: bool | Callable[[], bool] | None = Field(
        None, description="are the weights in the local cache? (a torch-free zero-argument check; None: n/a)")
    weights_sources: tuple[WeightSource, ...] = Field(
        (), description="where `rdmx weights fetch` downloads them from (HFSource / URLSource)")


class EncoderMeta(WeightsMeta):
    """An encoder (``factory(config) -> rdmx.represent.encoder.Encoder``)."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("resolution", "dim", "weights", "weights_available")
    OF_CONFIG: ClassVar[frozenset[str]] = frozenset({"dim", "resolution"})

    dim: OfConfigInt | None = Field(
        None, description="feature dimension of the (B, dim) output; of config; checked against the built encoder")
    resolution: OfConfigInt | None = Field(
        None, description="side length images are resized to (None: not an image encoder); of config; checked")
    pooling: str = Field("", description="how tokens or maps become one vector (cls, mean_patch, head, ...)")
    role_hint: Literal["", "train", "heldout", "text"] = Field(
        "", description="its role in the paper's panel, if any")
    modality: Literal["image", "text", "vector"] = Field("image", description="what it encodes")
    context_length: int | None = Field(None, ge=1, description="token context length (text encoders)")
    remote_code: bool = Field(False, description="runs model code from its hub repository (opt in per recipe)")
    contract_skip: tuple[Literal["deterministic", "batch_independent"], ...] = Field(
        (), description="behavioural rules it breaks on purpose (a stochastic encoder: 'deterministic'); every other "
        "rule of the contract is checked before each run (rdmx.testing.contract)")


class GeneratorMeta(WeightsMeta):
    """A generator (``factory(config, info: DataInfo) -> rdmx.train.generator.Generator``)."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("params", "resolution", "weights", "weights_available")
    OF_CONFIG: ClassVar[frozenset[str]] = frozenset({"resolution"})

    resolution: OfConfigInt | None = Field(
        None, description="side length of the images it makes (None: follows the data); of config")
    classes: int | None = Field(
        None, ge=0, description="classes its released weights are conditioned on (None: any / not class-conditional)")
    params: int | None = Field(None, ge=0, description="parameter count at its released size (listing)")
    modality: Literal["image", "text", "vector"] = Field("image", description="what it generates")
    exports: dict[str, str] = Field(
        default_factory=dict, description="rdmx export formats the plugin adds: format -> 'module:function', "
        "called as function(generator, config, folder, export) (rdmx.export)")
    foreign_weights: str | None = Field(
        None, description="'module:function' reading a checkpoint file of another code base (e.g. a paper's release) "
        "into this generator's state dict, for rdmx eval / sample -c; function(path, generator) -> dict or None")


class DatasetMeta(ComponentMeta):
    """A dataset (``factory(config) -> rdmx.data.RealData``)."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("kind", "classes")
    OF_CONFIG: ClassVar[frozenset[str]] = frozenset({"sample_shape", "classes"})

    kind: str = Field("images", description="images, vectors, ...")
    classes: OfConfigInt | None = Field(
        None, description="number of classes (0: unlabelled; None: known once the data is opened); of config")
    sample_shape: tuple[int, ...] | Callable[[Any], tuple[int, ...]] | None = Field(
        None, description="shape of one sample, e.g. (3, 256, 256); of config; used by rdmx show's memory check")


class EstimatorMeta(ComponentMeta):
    """A comparison estimator (``factory(config) -> rdmx.compare.base.Estimator``)."""

    axis: Literal["comparison"] = Field("comparison", description="the axis of the method it belongs to")


class BalancerMeta(ComponentMeta):
    """A balancer (``factory(config, names) -> rdmx.represent.balancers.Balancer``)."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("needs_floors",)

    needs_floors: bool = Field(False, description="uses each encoder's real-data floor (set_floors)")


class MetricMeta(WeightsMeta):
    """An evaluation metric (``factory(config) -> rdmx.evaluate.base.Metric``)."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("requires",)

    requires: tuple[str, ...] = Field((), description="what it reads: features, samples, labels, ...")


class PromptsMeta(ComponentMeta):
    """A prompt pool (``factory(config) -> rdmx.data.prompts.PromptPool``), the ``[prompts]`` block."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("source",)

    source: str = Field("", description="where its prompts come from (files, a dataset, ...)")


class TrackerMeta(ComponentMeta):
    """A tracker (``factory(config) -> rdmx.track.base.Tracker``), chosen by ``[tracking] backend``."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("remote",)

    remote: bool = Field(False, description="logs to a server (else a local store or nowhere)")


META_MODELS: dict[str, type[ComponentMeta]] = {
    "encoders": EncoderMeta,
    "estimators": EstimatorMeta,
    "balancers": BalancerMeta,
    "generators": GeneratorMeta,
    "datasets": DatasetMeta,
    "metrics": MetricMeta,
    "prompts": PromptsMeta,
    "trackers": TrackerMeta,
}


def describe_fields(kind: str) -> list[tuple[str, str, str]]:
    """(field, type, description) of a kind's metadata model, for documentation and errors."""
    model = META_MODELS[kind]
    rows = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        text = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append((name, text, field.description or ""))
    return rows
