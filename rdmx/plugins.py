"""Plugin manager: builtins and entry-point plugins, each loaded, validated and registered in
isolation, then committed all-or-nothing.

Loading one plugin:
1. import the entry point's module (builtins: instantiate the class);
2. validate its hooks: every ``rdmx_*`` function must be marked ``@hookimpl`` and name a known
   hook (pluggy's ``check_pending``), and the module must define at least one hook (an entry
   point naming the package instead of its hook module defines none);
3. call its register hooks with a staging ``register`` (metadata validated per call);
4. a plugin that staged nothing is a warning.

Committing: a name is unique per kind. A name of rdmx's builtins stays theirs — the plugin that
also registers it registers nothing (failed, naming both). A name two installed plugins
register makes both register nothing (failed, naming each other): which one a recipe meant is
unknowable, and the outcome must not depend on load order. Other plugins are untouched.

Environment:
  RDMX_STRICT_PLUGINS=1       any plugin failure or warning is a hard error
  RDMX_DISABLE_PLUGINS=a,b    skip plugins by entry-point name or distribution name
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from rdmx import __version__
from rdmx.errors import PluginError, RdmxError, close_matches
from rdmx.hookspecs import COMMANDS_HOOK, KINDS, PROJECT, RdmxSpec
from rdmx.registry import Entry, Registry, make_register

ENTRY_POINT_GROUP = "rdmx"
SLOW_S = float(os.environ.get("RDMX_SLOW_PLUGIN_S", "1.0"))  # a plugin loading longer is named in a warning
BUILTIN_COMMANDS = ("list", "plugins", "show", "run", "eval", "sample", "ui", "reference", "weights", "ema", "export",
                    "new", "geneval-score", "compare-evals")
KNOWN_HOOKS = tuple(f"rdmx_register_{k}" for k in KINDS) + (COMMANDS_HOOK,)


@dataclass
class PluginInfo:
    """What ``rdmx plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | warning | failed | disabled
    error: str = ""  # why it failed, or the warning
    detail: str = ""  # traceback of a failure
    components: dict[str, list[str]] = field(default_factory=dict)
    builtin: bool = False
    load_s: float = 0.0  # seconds to import the module and run its hooks
    staged: dict[str, list[Entry]] = field(default_factory=dict, repr=False)
    commands: list[Any] = field(default_factory=list, repr=False)  # typer CommandInfo / TyperInfo

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def loaded(self) -> bool:
        """Its components are registered (ok, or ok with a warning)."""
        return self.status in ("ok", "warning")

    @property
    def owner(self) -> str:
        """How registry entries and messages name it: builtin plugin name or distribution."""
        return self.name if self.builtin else self.distribution

    def summary(self, limit: int = 300) -> str:
        """``'name' (distribution version): error`` in one line of at most ``limit`` characters."""
        text = f"'{self.name}' ({self.distribution} {self.version}): {' '.join(self.error.split())}"
        return text if len(text) <= limit else text[: limit - 3] + "..."


def _env_list(var: str) -> set[str]:
    return {s.strip() for s in os.environ.get(var, "").split(",") if s.strip()}


def _strict() -> bool:
    return os.environ.get("RDMX_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


def rdmx_requirement_unmet(dist) -> str:
    """Why a plugin distribution cannot work with the rdmx installed (it requires another
    version, and was installed without dependency checks), or ''."""
    if dist is None:
        return ""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging comes with pip
        return ""
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.name.lower() != "rdmx" or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        if req.specifier and not req.specifier.contains(__version__, prereleases=True):
            return (f"requires rdmx{req.specifier}, but rdmx {__version__} is installed; upgrade rdmx, or install a "
                    f"version of {dist.name} made for rdmx {__version__}")
    return ""


def command_name(info: Any) -> str:
    """The name typer gives a registered command or group."""
    name = getattr(info, "name", None)
    if not name:
        callback = getattr(info, "callback", None) or getattr(getattr(info, "typer_instance", None), "info", None)
        name = getattr(callback, "__name__", "") if callback is not None else ""
    return str(name).lower().replace("_", "-")


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
        self._builtin_clashes: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, name) -> (builtin, plugin)

    # -- loading -----------------------------------------------------------------------
    def load(self) -> Plugins:
        builtin = importlib.import_module("rdmx.builtin.plugin")
        for name, cls in builtin.BUILTINS.items():
            info = PluginInfo(name, "rdmx", __version__, f"rdmx.builtin.plugin:{cls.__name__}", builtin=True)
            self._load_one(info, cls)
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            info = PluginInfo(ep.name, dist, version, ep.value)
            if ep.name in self.disabled or dist in self.disabled:
                info.status = "disabled"
                info.error = "disabled by RDMX_DISABLE_PLUGINS"
                self.infos.append(info)
                continue
            wrong = rdmx_requirement_unmet(ep.dist)
            if wrong:
                self.infos.append(info)
                self._fail(info, wrong)
                continue
            self._load_one(info, ep.load)
        self._commit()
        return self

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None = None) -> None:
        info.error = f"{info.error}; {message}" if info.status == "failed" and info.error else message
        info.status = "failed"
        info.staged, info.commands = {}, []
        if exc is not None:
            info.detail = "".join(traceback.format_exception(exc))
        if self.strict:
            raise PluginError(f"plugin '{info.name}' ({info.distribution} {info.version}): {message}") from exc

    def _warn(self, info: PluginInfo, message: str) -> None:
        info.status = "warning"
        info.error = message
        if self.strict:
            raise PluginError(f"plugin '{info.name}' ({info.distribution} {info.version}): {message} "
                              f"(RDMX_STRICT_PLUGINS makes this an error)")

    def _load_one(self, info: PluginInfo, loader) -> None:
        import time

        t0 = time.perf_counter()
        try:
            self._load_module(info, loader)
        finally:
            info.load_s = time.perf_counter() - t0

    def slow(self, threshold: float = SLOW_S) -> list[PluginInfo]:
        """Plugins whose import and registration took longer than ``threshold`` seconds."""
        return [i for i in self.infos if i.load_s > threshold and not i.builtin]

    def _load_module(self, info: PluginInfo, loader) -> None:
        self.infos.append(info)
        try:
            module = loader()
        except Exception as exc:  # noqa: BLE001 - fault isolation
            self._fail(info, f"import failed: {type(exc).__name__}: {exc}", exc)
            return
        problem = self._unmarked_hooks(module)
        if problem:
            self._fail(info, problem)
            return
        try:
            self.pm.register(module, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._fail(info, f"invalid hook: {exc}", exc)
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = sorted(c.name for c in self.pm.get_hookcallers(module) or [] if c.spec is None)
            self.pm.unregister(module)
            hints = "".join(close_matches(u, KNOWN_HOOKS, n=1) for u in unknown)
            self._fail(info, f"unknown hook {', '.join(unknown)}{hints}; rdmx's hooks are: {', '.join(KNOWN_HOOKS)}",
                       exc)
            return
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        if not info.hooks:
            self.pm.unregister(module)
            self._fail(info, self._no_hooks_message(info, module))
            return
        try:
            self._stage(info, module)
        except PluginError as exc:  # a register() call refused: its message names the problem
            self.pm.unregister(module)
            self._fail(info, f"registration refused: {exc}", exc)
            return
        except Exception as exc:  # noqa: BLE001
            self.pm.unregister(module)
            self._fail(info, f"registration failed: {type(exc).__name__}: {exc}", exc)
            return
        if not any(info.staged.values()) and not info.commands:
            self._warn(info, f"registered nothing: its hooks ({', '.join(info.hooks)}) never called register()")

    def _unmarked_hooks(self, module: Any) -> str:
        """A message when the module defines ``rdmx_*`` functions that pluggy will not call."""
        bad = []
        for attr in dir(module):
            if not attr.startswith("rdmx_"):
                continue
            obj = getattr(module, attr, None)
            if not inspect.isroutine(obj) or self.pm.parse_hookimpl_opts(module, attr) is not None:
                continue
            bad.append(attr)
        if not bad:
            return ""
        parts = []
        for attr in bad:
            if attr in KNOWN_HOOKS:
                parts.append(f"{attr} is not marked @hookimpl (from rdmx import hookimpl), so rdmx never calls it")
            else:
                parts.append(f"{attr} is not marked @hookimpl and is not an rdmx hook"
                             f"{close_matches(attr, KNOWN_HOOKS, n=1)}")
        return "; ".join(parts)

    @staticmethod
    def _no_hooks_message(info: PluginInfo, module: Any) -> str:
        name = getattr(module, "__name__", info.module)
        if hasattr(module, "__path__"):  # a package: the entry point should name its hook module
            subs = [m.name for m in pkgutil.iter_modules(module.__path__)]
            subs.sort(key=lambda s: (not any(k in s for k in ("plugin", "hook")), s))
            hint = f', e.g. {info.name} = "{name}.{subs[0]}"' if subs else ""
            return (f"entry point {info.name} = \"{info.module}\" names the package {name}, which defines no "
                    f"rdmx hooks; name the module that defines them{hint}")
        return f"module {name} defines no rdmx hooks (functions named rdmx_register_* marked @hookimpl)"

    def _stage(self, info: PluginInfo, module: Any) -> None:
        """Call this plugin's hooks (only its own) with staging callbacks."""
        others = [p for p in self.pm.get_plugins() if p is not module]
        for kind in KINDS:
            hook = f"rdmx_register_{kind}"
            if hook not in info.hooks:
                continue
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
            staged: list[Entry] = []
            caller(register=make_register(kind, info.owner, info.version, staged))
            info.staged[kind] = staged
            if kind == "encoders":
                blind = [e.name for e in staged if e.meta.modality == "image"
                         and (e.meta.dim is None or e.meta.resolution is None)]
                if blind:
                    self._warn(info, f"image encoder(s) {', '.join(blind)} register no dim or resolution, so rdmx "
                                     f"cannot check the built spec against them: declare both (numbers, or functions "
                                     f"of the config)")
        if COMMANDS_HOOK in info.hooks:
            import typer

            cli = typer.Typer()
            self.pm.subset_hook_caller(COMMANDS_HOOK, remove_plugins=others)(cli=cli)
            info.commands = [*cli.registered_commands, *cli.registered_groups]

    # -- committing --------------------------------------------------------------------
    def _commit(self) -> None:
        claims: dict[tuple[str, str], list[PluginInfo]] = {}
        for info in self.infos:
            if not info.loaded:
                continue
            for kind, entries in info.staged.items():
                for e in entries:
                    claims.setdefault((kind, e.name), []).append(info)
            for cmd in info.commands:
                claims.setdefault(("commands", command_name(cmd)), []).append(info)
        rejected: dict[int, list[str]] = {}
        for (kind, name), owners in claims.items():
            noun = "command" if kind == "commands" else kind[:-1]
            if kind == "commands" and name in BUILTIN_COMMANDS:
                for o in owners:
                    rejected.setdefault(id(o), []).append(
                        f"command name '{name}' is one of rdmx's own commands; the plugin registers nothing")
                continue
            if len(owners) < 2:
                continue
            builtins = [o for o in owners if o.builtin]
            if len(builtins) > 1:
                raise PluginError(f"rdmx bug: builtin plugins {[o.name for o in builtins]} both register {noun} '{name}'")
            if builtins:
                for o in owners:
                    if not o.builtin:
                        self._builtin_clashes[(kind, name)] = (builtins[0].name, o.owner)
                        rejected.setdefault(id(o), []).append(
                            f"{noun} name '{name}' belongs to rdmx's builtin plugin '{builtins[0].name}'; builtins "
                            f"keep their names, so plugin '{o.owner}' registers nothing (rename its {noun})")
                continue
            labels = sorted(o.owner for o in owners)
            self._clashes[(kind, name)] = labels
            for o in owners:
                rejected.setdefault(id(o), []).append(
                    f"{noun} name '{name}' is registered twice: by plugin '{labels[0]}' and by plugin "
                    f"'{labels[-1]}'; neither registers anything until one is uninstalled or disabled "
                    f"(RDMX_DISABLE_PLUGINS)")
        for info in self.infos:
            if id(info) in rejected:
                self._fail(info, "; ".join(rejected[id(info)]))
        for info in self.infos:
            if not info.loaded:
                continue
            for kind, entries in info.staged.items():
                for entry in entries:
                    self.registries[kind].add(entry)
                info.components[kind] = [e.name for e in entries]
            if info.commands:
                info.components["commands"] = [command_name(c) for c in info.commands]

    # -- queries -----------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def get(self, kind: str, name: str, where: str = "") -> Entry:
        """The entry of ``name``; an unknown name's error lists the plugins that failed to load."""
        loc = f"{where}: " if where else ""
        taken = self._builtin_clashes.get((kind, name))
        if taken:  # the recipe may mean the plugin's: never train the builtin in its place without a word
            raise PluginError(
                f"{loc}{kind[:-1]} name '{name}' is rdmx's builtin ({taken[0]}) and also plugin '{taken[1]}'s, which "
                f"was refused for it: rename the plugin's {kind[:-1]}, or disable the plugin (RDMX_DISABLE_PLUGINS="
                f"{taken[1]}) to use the builtin")
        clash = self._clashes.get((kind, name))
        if clash:
            raise PluginError(
                f"{loc}{kind[:-1]} name '{name}' is registered twice: by plugin '{clash[0]}' and by "
                f"plugin '{clash[-1]}'; uninstall or disable one (RDMX_DISABLE_PLUGINS)"
            )
        try:
            return self.registries[kind].get(name, where)
        except RdmxError as exc:
            failed = self.failures()
            if not failed:
                raise
            listed = "; ".join(i.summary(240) for i in failed)
            raise RdmxError(f"{exc}. {len(failed)} plugin(s) failed to load and register nothing, so a "
                            f"{kind[:-1]} of theirs may be missing: {listed} (see `rdmx plugins`)") from None

    def failures(self) -> list[PluginInfo]:
        return [i for i in self.infos if i.status == "failed"]

    def warnings(self) -> list[PluginInfo]:
        return [i for i in self.infos if i.status == "warning"]

    def commands(self) -> list[tuple[PluginInfo, Any]]:
        """(plugin, typer CommandInfo / TyperInfo) of every loaded plugin's CLI commands."""
        return [(i, c) for i in self.infos if i.loaded for c in i.commands]


_CACHE: Plugins | None = None


def get_plugins(refresh: bool = False) -> Plugins:
    """The process-wide plugin set, loaded once."""
    global _CACHE
    if _CACHE is None or refresh:
        _CACHE = Plugins().load()
    return _CACHE
