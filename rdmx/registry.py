"""Typed registries of named components, each with its config model and typed metadata.

A component is registered as ``register(name, factory, config=Model, description=..., **meta)``
(see :mod:`rdmx.hookspecs`): ``config`` is a :class:`ComponentConfig` subclass that validates
the component's options in a recipe, ``**meta`` is validated by the kind's metadata model
(:mod:`rdmx.meta`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rdmx.errors import PluginError, RdmxError, close_matches
from rdmx.hookspecs import KINDS
from rdmx.meta import META_MODELS, ComponentMeta, tuples_from_lists

Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description="a random seed in [0, 2^63)")]
"""A seed field every RNG accepts (torch.manual_seed, numpy.random.default_rng)."""


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are errors, no silent coercion.

    Strict types: ``"64"``, ``8.0`` or ``true`` for an ``int`` field are refused (a TOML array
    still fills a ``tuple`` field); floats must be finite. Use :data:`Seed` for seeds."""

    model_config = ConfigDict(extra="forbid", frozen=False, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _tuples(cls, data: Any) -> Any:
        return tuples_from_lists(cls, data)


class EmptyConfig(ComponentConfig):
    """For components without options."""


def _kind_noun(kind: str) -> str:
    return kind[:-1]


@dataclass
class Entry:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    config: type[BaseModel]
    description: str
    plugin: str
    version: str
    meta: ComponentMeta | dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, ComponentMeta):
            self.meta = validate_meta(self.kind, self.name, self.plugin, dict(self.meta))

    @property
    def label(self) -> str:
        """``encoder 'toy-conv' (plugin builtin.toys)``: how messages name the component."""
        return f"{_kind_noun(self.kind)} '{self.name}' (plugin {self.plugin})"

    def resolve_factory(self) -> Callable[..., Any]:
        """The factory; a ``"module:attr"`` string is imported only now (lazy heavy imports)."""
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001 - reported with the plugin's name
            raise PluginError(
                f"{self.label}: cannot import its factory {self.factory}: {type(exc).__name__}: {exc}"
            ) from exc
        self.factory = obj
        return obj

    def validate_config(self, config: BaseModel | dict | None = None) -> BaseModel:
        """``config`` validated by the registered model (a model instance passes through)."""
        if isinstance(config, BaseModel):
            return config
        return self.config.model_validate(config or {})

    def build(self, config: BaseModel | dict | None = None, *args: Any, **kwargs: Any) -> Any:
        """Validate ``config`` with the registered model and call the factory."""
        return self.resolve_factory()(self.validate_config(config), *args, **kwargs)

    def declared(self, key: str, config: BaseModel | dict | None = None) -> Any:
        """A metadata value for ``config`` (functions of the config are evaluated with it)."""
        return self.meta.resolve(key, self.validate_config(config) if config is not None else None)

    def default_config(self) -> BaseModel | None:
        """The config with every option at its default, or None when some option is required."""
        try:
            return self.config.model_validate({})
        except ValidationError:
            return None

    def meta_value(self, key: str, default: Any = None) -> Any:
        """A metadata value for listing: functions are evaluated (of the config: at its defaults);
        a failing check reports its error text."""
        try:
            value = self.meta.resolve(key, self.default_config() if key in self.meta.OF_CONFIG else None)
        except Exception as exc:  # noqa: BLE001 - listing never fails on one entry
            return f"error: {exc}"
        return default if value is None else value


def validate_meta(kind: str, name: str, plugin: str, meta: dict[str, Any]) -> ComponentMeta:
    """``meta`` validated by the kind's model; errors name the plugin, the component and the key."""
    model = META_MODELS[kind]
    try:
        return model.model_validate(meta)
    except ValidationError as exc:
        problems, seen = [], set()
        for err in exc.errors():
            loc = err.get("loc", ())
            key = str(loc[0]) if loc else "(meta)"
            if key in seen:
                continue
            seen.add(key)
            if err.get("type") == "extra_forbidden":
                allowed = ", ".join(model.model_fields)
                problems.append(f"unknown metadata key '{key}'{close_matches(key, model.model_fields)} "
                                f"(keys of {kind}: {allowed})")
                continue
            shown = repr(err.get("input"))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            field = model.model_fields.get(key)
            union = sum(1 for e in exc.errors() if e.get("loc", ())[:1] == (key,)) > 1
            expected = _type_text(field.annotation) if (field is not None and union) else err.get("msg", "invalid")
            problems.append(f"metadata '{key}': {'expected ' + expected if union else expected} (got {shown})")
        raise PluginError(f"plugin {plugin}: {_kind_noun(kind)} '{name}': " + "; ".join(problems)) from None


def _type_text(annotation: Any) -> str:
    """``int | a function of the config | None`` for error messages."""
    import typing

    args = typing.get_args(annotation) or (annotation,)
    names = []
    for a in args:
        if a is type(None):
            names.append("None")
        elif typing.get_origin(a) is not None and "Callable" in str(typing.get_origin(a)):
            names.append("a function" + (" of the config" if typing.get_args(a)[0] != [] else ""))
        else:
            names.append(getattr(a, "__name__", str(a).replace("typing.", "")))
    return " | ".join(names)


class Registry:
    """Components of one kind, keyed by unique name."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        old = self._entries.get(entry.name)
        if old is not None:
            raise PluginError(
                f"{_kind_noun(self.kind)} name '{entry.name}' is registered twice: by plugin "
                f"'{old.plugin}' and by plugin '{entry.plugin}'"
            )
        self._entries[entry.name] = entry

    def get(self, name: str, where: str = "") -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            loc = f"{where}: " if where else ""
            hint = close_matches(name, self._entries)
            known = ", ".join(sorted(self._entries)) or "none"
            raise RdmxError(
                f"{loc}unknown {_kind_noun(self.kind)} '{name}'{hint}; registered: {known}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


# keys of a recipe's component block that rdmx itself reads (a component config may not declare them)
RESERVED_FIELDS = frozenset({"name", "role", "label", "weights_dtype", "backend", "run_name"})


def make_register(registry: Registry | str, plugin: str, version: str, staged: list[Entry]):
    """The ``register`` callback handed to one plugin's hook for one kind.

    Each call is checked at once (name, factory, config model, metadata) and staged; the plugin
    manager commits a plugin's staged entries only when all of its hooks succeeded."""
    kind = registry.kind if isinstance(registry, Registry) else registry
    noun = _kind_noun(kind)

    def register(
        name: str,
        factory: Callable[..., Any] | str,
        config: type[BaseModel] = EmptyConfig,
        description: str = "",
        **meta: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin}: a {noun} name must be a non-empty string")
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"plugin {plugin}: {noun} '{name}' config must be a pydantic model class")
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise PluginError(f"plugin {plugin}: {noun} '{name}' factory must be callable or 'module:attr'")
        if not isinstance(description, str):
            raise PluginError(f"plugin {plugin}: {noun} '{name}' description must be a string")
        if any(e.name == name for e in staged):
            raise PluginError(f"plugin {plugin}: registers the {noun} name '{name}' twice")
        taken = sorted(set(config.model_fields) & RESERVED_FIELDS)
        if taken:
            raise PluginError(f"plugin {plugin}: {noun} '{name}' config field(s) {', '.join(taken)} are reserved: the "
                              f"recipe's own block uses {', '.join(sorted(RESERVED_FIELDS))}; rename them")
        typed = validate_meta(kind, name, plugin, meta)
        staged.append(Entry(kind, name, factory, config, description.strip(), plugin, version, typed))

    return register
