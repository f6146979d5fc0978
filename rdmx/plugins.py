"""Plugin manager: builtins and entry-point plugins, each loaded and registered in isolation.

Environment:
  RDMX_STRICT_PLUGINS=1       any plugin failure is a hard error
  RDMX_DISABLE_PLUGINS=a,b    skip plugins by entry-point name or distribution name
"""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from rdmx import __version__
from rdmx.errors import PluginError
from rdmx.hookspecs import KINDS, PROJECT, RdmxSpec
from rdmx.registry import Entry, Registry, make_register

ENTRY_POINT_GROUP = "rdmx"


@dataclass
class PluginInfo:
    """What ``rdmx plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"
    error: str = ""
    detail: str = ""
    components: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _env_list(var: str) -> set[str]:
    return {s.strip() for s in os.environ.get(var, "").split(",") if s.strip()}


def _strict() -> bool:
    return os.environ.get("RDMX_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


class Plugins:
    """All registries plus the load report of every plugin."""

    def __init__(self, strict: bool | None = None, disabled: set[str] | None = None):
        self.strict = _strict() if strict is None else strict
        self.disabled = _env_list("RDMX_DISABLE_PLUGINS") if disabled is None else disabled
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(RdmxSpec)
        self.registries = {kind: Registry(kind) for kind in KINDS}
        self.infos: list[PluginInfo] = []
        self._clashes: dict[tuple[str, str], list[str]] = {}

    # -- loading -----------------------------------------------------------------------
    def load(self) -> Plugins:
        builtin = importlib.import_module("rdmx.builtin.plugin")
        for name, cls in builtin.BUILTINS.items():
            self._load_one(PluginInfo(name, "rdmx", __version__, f"rdmx.builtin.plugin:{cls.__name__}"), cls)
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            info = PluginInfo(ep.name, dist, version, ep.value)
            if ep.name in self.disabled or dist in self.disabled:
                info.status = "disabled"
                info.error = "disabled by RDMX_DISABLE_PLUGINS"
                self.infos.append(info)
                continue
            self._load_one(info, ep.load)
        return self

    def _fail(self, info: PluginInfo, exc: BaseException, stage: str) -> None:
        info.status = "failed"
        info.error = f"{stage}: {type(exc).__name__}: {exc}"
        info.detail = "".join(traceback.format_exception(exc))
        if self.strict:
            raise PluginError(f"plugin '{info.name}' ({info.distribution} {info.version}) {info.error}") from exc

    def _load_one(self, info: PluginInfo, loader) -> None:
        self.infos.append(info)
        try:
            module = loader()
            self.pm.register(module, name=info.name)
        except Exception as exc:  # noqa: BLE001 - fault isolation
            self._fail(info, exc, "import failed")
            return
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        staged: dict[str, list[Entry]] = {}
        try:
            for kind in KINDS:
                hook = f"rdmx_register_{kind}"
                if hook not in info.hooks:
                    continue
                caller = self.pm.subset_hook_caller(
                    hook, remove_plugins=[p for p in self.pm.get_plugins() if p is not module]
                )
                staged[kind] = []
                caller(register=make_register(self.registries[kind], info.distribution, info.version, staged[kind]))
        except Exception as exc:  # noqa: BLE001
            self._fail(info, exc, "registration failed")
            return
        for kind, entries in staged.items():
            for entry in entries:
                entry.plugin = info.name if info.name.startswith("builtin.") else info.distribution
                self._add(info, entry)
            info.components[kind] = [e.name for e in entries]

    def _add(self, info: PluginInfo, entry: Entry) -> None:
        reg = self.registries[entry.kind]
        key = (entry.kind, entry.name)
        if entry.name in reg or key in self._clashes:
            first = reg._entries.pop(entry.name, None)  # noqa: SLF001
            owners = self._clashes.setdefault(key, [first.plugin] if first else [])
            owners.append(entry.plugin)
            msg = (
                f"{entry.kind[:-1]} name '{entry.name}' is registered twice: by plugin "
                f"'{owners[0]}' and by plugin '{owners[-1]}'"
            )
            for other in self.infos:
                if other is info or (other.distribution == owners[0] or other.name == owners[0]):
                    other.status = "failed"
                    other.error = "; ".join(x for x in (other.error, msg) if x and x != msg) or msg
            if self.strict:
                raise PluginError(msg)
            return
        reg.add(entry)

    # -- queries -----------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def get(self, kind: str, name: str, where: str = "") -> Entry:
        clash = self._clashes.get((kind, name))
        if clash:
            raise PluginError(
                f"{where + ': ' if where else ''}{kind[:-1]} name '{name}' is registered twice: by "
                f"plugin '{clash[0]}' and by plugin '{clash[-1]}'; uninstall or disable one "
                f"(RDMX_DISABLE_PLUGINS)"
            )
        return self.registries[kind].get(name, where)

    def failures(self) -> list[PluginInfo]:
        return [i for i in self.infos if i.status == "failed"]


_CACHE: Plugins | None = None


def get_plugins(refresh: bool = False) -> Plugins:
    """The process-wide plugin set, loaded once."""
    global _CACHE
    if _CACHE is None or refresh:
        _CACHE = Plugins().load()
    return _CACHE
