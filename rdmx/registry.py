"""Typed registries of named components, each with the config model its plugin registered."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from rdmx.errors import PluginError, RdmxError, close_matches
from rdmx.hookspecs import KINDS


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class EmptyConfig(ComponentConfig):
    """For components without options."""


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
    meta: dict[str, Any] = field(default_factory=dict)

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
                f"{self.kind[:-1]} '{self.name}' (plugin {self.plugin}): cannot import "
                f"its factory {self.factory}: {type(exc).__name__}: {exc}"
            ) from exc
        self.factory = obj
        return obj

    def build(self, config: BaseModel | dict | None = None, *args: Any, **kwargs: Any) -> Any:
        """Validate ``config`` with the registered model and call the factory."""
        if not isinstance(config, BaseModel):
            config = self.config.model_validate(config or {})
        return self.resolve_factory()(config, *args, **kwargs)

    def meta_value(self, key: str, default: Any = None) -> Any:
        """A metadata value; callables are evaluated lazily (e.g. weights availability)."""
        value = self.meta.get(key, default)
        if callable(value):
            try:
                value = value()
            except Exception as exc:  # noqa: BLE001
                value = f"error: {exc}"
        return value


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
                f"{self.kind[:-1]} name '{entry.name}' is registered twice: by plugin "
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
                f"{loc}unknown {self.kind[:-1]} '{name}'{hint}; registered: {known}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def make_register(registry: Registry, plugin: str, version: str, staged: list[Entry]):
    """The ``register`` callback handed to one plugin's hook for one kind."""

    def register(
        name: str,
        factory: Callable[..., Any] | str,
        config: type[BaseModel] = EmptyConfig,
        description: str = "",
        **meta: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin}: a {registry.kind[:-1]} name must be a non-empty string")
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(
                f"plugin {plugin}: {registry.kind[:-1]} '{name}' config must be a pydantic model class"
            )
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise PluginError(
                f"plugin {plugin}: {registry.kind[:-1]} '{name}' factory must be callable or 'module:attr'"
            )
        staged.append(
            Entry(registry.kind, name, factory, config, description.strip(), plugin, version, dict(meta))
        )

    return register
