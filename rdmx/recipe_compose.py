"""Recipes that compose: ``include`` files merged first, ``${ENV_VAR}`` interpolation.

``include = ["batteries/panel.toml", ...]`` (paths relative to the including file, or absolute)
reads each file in order — includes may include others, a cycle is an error — and merges them
*before* the recipe's own content: tables merge key by key, any other value (numbers, strings,
arrays, arrays of tables such as ``[[battery.encoders]]``) is replaced whole by a later one. So
a recipe overrides what it includes, and a battery defined by the recipe replaces an included
battery rather than extending it. A component block (a table with ``name``) that names another
component than the included one replaces it whole: the included one's options belong to it
(``[balancer] name = "uniform"`` over an included Lagrangian controller drops its constants).

``${NAME}`` in any string is replaced by the environment variable ``NAME``; ``${NAME:-text}``
falls back to ``text`` when it is unset or empty; ``$${`` is a literal ``${``. An unset
variable without a fallback is an error naming the recipe path of the string.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from rdmx.errors import RecipeError

INCLUDE_KEY = "include"
_ENV = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing, non-text or invalid file is a RecipeError naming it."""
    p = Path(path)
    if p.is_dir():
        raise RecipeError(f"{p} is a folder, not a recipe file (a .toml; a run folder's recipe is "
                          f"{p / 'recipe.resolved.toml'})")
    if not p.is_file():
        raise RecipeError(f"recipe not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{p}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{p}: not a text file: {exc}") from None


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` merged into a copy of ``base``: tables recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _other_component(out[key], value):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _other_component(base: dict[str, Any], top: dict[str, Any]) -> bool:
    return "name" in base and "name" in top and base["name"] != top["name"]


def read_recipe(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file with its includes merged in (the ``include`` key itself removed)."""
    p = Path(path)
    raw = read_toml(p)
    includes = raw.pop(INCLUDE_KEY, [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise RecipeError(f"{p}: include: expected a list of file paths, got {includes!r}")
    here = p.resolve()
    merged: dict[str, Any] = {}
    for item in includes:
        target = Path(os.path.expandvars(item)).expanduser()
        target = target if target.is_absolute() else p.parent / target
        if target.resolve() in (*_chain, here):
            cycle = " -> ".join(str(c) for c in (*_chain, here, target.resolve()))
            raise RecipeError(f"{p}: include '{item}' makes a cycle: {cycle}")
        if not target.is_file():
            raise RecipeError(f"{p}: include '{item}': no such file ({target})")
        merged = merge(merged, read_recipe(target, (*_chain, here)))
    return merge(merged, raw)


def _where(path: list[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out or "(top level)"


def interpolate_env(obj: Any, source: str, env: dict[str, str] | None = None,
                    _path: list[str | int] | None = None) -> Any:
    """A copy of ``obj`` with ``${NAME}`` / ``${NAME:-default}`` replaced in every string."""
    env = os.environ if env is None else env
    path = _path or []
    if isinstance(obj, dict):
        return {k: interpolate_env(v, source, env, [*path, k]) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate_env(v, source, env, [*path, i]) for i, v in enumerate(obj)]
    if not isinstance(obj, str) or "${" not in obj:
        return obj

    def repl(m: re.Match) -> str:
        if m.group(1):  # $${...}: a literal ${...}
            return m.group(0)[1:]
        name, default = m.group(2), m.group(3)
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        raise RecipeError(
            f"{source}: {_where(path)}: environment variable {name} is not set (the value says "
            f"{m.group(0)}); export {name}=..., or write ${{{name}:-fallback}}"
        )

    return _ENV.sub(repl, obj)
