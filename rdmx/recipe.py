"""TOML recipes: schema (pydantic), loading, ``--set`` overrides, component validation, fingerprint.

A component block is a table with ``name`` plus that component's options, validated by the
config model its plugin registered. Errors are :class:`RecipeError` naming the recipe path
(``battery.encoders[2].name``), the bad value and close matches.
"""

from __future__ import annotations

import copy
import itertools
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rdmx.compare.configs import JointSpec
from rdmx.errors import RdmxError, RecipeError, close_matches
from rdmx.fingerprint import fingerprint


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(BaseModel):
    """``name`` plus the component's own options (validated later by its plugin's model)."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BatteryEncoder(Component):
    role: Literal["train", "heldout"] = "train"
    label: str | None = Field(default=None, description="name in logs; defaults to the encoder name")
    weights_dtype: Literal["float32", "bfloat16"] | None = Field(
        default=None, description="dtype the frozen weights are held in; default battery.weights_dtype")

    def key(self) -> str:
        return self.label or self.name


class Battery(_Strict):
    encoders: list[BatteryEncoder] = Field(min_length=1)
    weights_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="frozen weights of every encoder that computes under bf16 autocast are held "
                               "in this dtype (float32-compute encoders such as FID Inception keep float32)")

    @model_validator(mode="after")
    def _unique_labels(self) -> Battery:
        seen: dict[str, int] = {}
        for i, enc in enumerate(self.encoders):
            if enc.key() in seen:
                raise ValueError(
                    f"encoders[{i}] repeats the label '{enc.key()}' of encoders[{seen[enc.key()]}]; "
                    f"give one of them a distinct `label`"
                )
            seen[enc.key()] = i
        if not any(e.role == "train" for e in self.encoders):
            raise ValueError("the battery needs at least one encoder with role = 'train'")
        return self


class TrainConfig(_Strict):
    steps: int = Field(1000, ge=0)
    batch: int = Field(256, ge=1, description="generated batch N per step (global)")
    micro_batch: int | Literal["auto"] = Field(
        0, description="chunk size for gradient caching; 0 = the whole per-process batch; "
                       "'auto' = the largest divisor of the per-process batch that fits in memory")
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(0.0, ge=0, description="max grad norm; 0 = off")
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min: float = Field(0.0, ge=0)
    loss_scale: Literal["none", "accumulation"] = "none"
    device: str = "auto"
    compile: bool = Field(False, description="torch.compile the generator and every encoder")
    shard: Literal["none", "fsdp"] = Field(
        "none", description="'fsdp': shard the generator with FSDP2 (per shard_units() block) under torchrun")
    activation_checkpointing: bool = Field(
        False, description="recompute each of the generator's shard_units() blocks in backward")
    sample_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    log_every: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _chunks(self) -> TrainConfig:
        if self.micro_batch == "auto":
            return self
        if self.micro_batch < 0:
            raise ValueError(f"micro_batch must be >= 0 or 'auto', got {self.micro_batch}")
        mb = self.micro_batch or self.batch
        if self.batch % mb:
            raise ValueError(
                f"batch ({self.batch}) must be a multiple of micro_batch ({mb}): "
                f"N = micro_batch × world_size × accumulation"
            )
        return self


class EvalConfig(_Strict):
    every: int = Field(0, ge=0, description="evaluate every K steps (and at step 0); 0 = start and end only")
    n: int = Field(16384, ge=2)
    chunk: int = Field(0, ge=0, description="samples generated and encoded at once (no gradients); "
                                             "0 = 4 × the training micro batch")
    directions: int = Field(1024, ge=1)
    seed: int = 0
    suite: list[Literal["sw", "mmdr", "fd"]] = Field(
        default_factory=lambda: ["sw", "mmdr", "fd"], min_length=1,
        description="SW_rK, MMDr (RFF) and per-encoder FD against the real banks")
    metrics: list[Component] = Field(default_factory=list)


class ReferenceConfig(_Strict):
    cache_dir: str = ".rdmx-cache"
    floor_draws: int = Field(8, ge=1)
    floor_rows: int = Field(5120, ge=2)
    batch_size: int = Field(64, ge=1, description="images per batch during feature extraction")
    workers: int = Field(0, ge=0, description="DataLoader workers decoding images (folders: use several)")


class TrackingConfig(_Strict):
    backend: Literal["mlflow", "none"] = "mlflow"
    uri: str | None = None
    experiment: str = "rdmx"
    run_name: str | None = None


class Recipe(_Strict):
    name: str = "run"
    seed: int = 0
    data: Component
    generator: Component
    estimator: Component = Field(default_factory=lambda: Component(name="mmd-nystrom"))
    joint: JointSpec = Field(default_factory=JointSpec, description="the law matched: marginal, class or text")
    battery: Battery
    balancer: Component = Field(default_factory=lambda: Component(name="uniform"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)


# -- component blocks ------------------------------------------------------------------------

COMPONENT_BLOCKS: tuple[tuple[str, str], ...] = (
    ("data", "datasets"),
    ("generator", "generators"),
    ("estimator", "estimators"),
    ("balancer", "balancers"),
)
_RESERVED = {"name", "role", "label", "weights_dtype"}


class ResolvedRecipe:
    """A validated recipe with every component's config model instance."""

    def __init__(self, recipe: Recipe, configs: dict[str, BaseModel], source: str):
        self.recipe = recipe
        self.configs = configs  # recipe path -> validated config (e.g. "battery.encoders[0]")
        self.source = source

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: defaults filled in, component options from their models."""
        out = self.recipe.model_dump(mode="json", exclude={"sweep"})
        for path, cfg in self.configs.items():
            block = _get_path(out, path)
            keep = {k: block[k] for k in _RESERVED if k in block}
            block.clear()
            block.update(keep)
            block.update(cfg.model_dump(mode="json"))
        if self.recipe.sweep:
            out["sweep"] = copy.deepcopy(self.recipe.sweep)
        return out

    @property
    def fingerprint(self) -> str:
        """Hash of everything that changes the result (tracking settings excluded)."""
        d = self.to_dict()
        d.pop("tracking", None)
        return fingerprint(d)

    def config(self, path: str) -> BaseModel:
        return self.configs[path]


# -- paths ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    pos = 0
    for m in _TOKEN.finditer(path):
        parts.append(int(m.group(2)) if m.group(2) is not None else m.group(1))
        pos = m.end()
    if not parts or pos != len(path.rstrip(".")):
        raise RecipeError(f"bad recipe path {path!r}: use a.b.c or battery.encoders[0].name")
    return parts


def _get_path(d: Any, path: str) -> Any:
    for p in _split_path(path):
        d = d[p]
    return d


def format_loc(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def set_path(d: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at ``path`` in a raw recipe dict, creating tables as needed."""
    parts = _split_path(path)
    cur: Any = d
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(p, int):
            if not isinstance(cur, list) or p >= len(cur):
                raise RecipeError(f"--set {path}: index [{p}] is out of range")
            cur = cur[p]
        else:
            if not isinstance(cur, dict):
                raise RecipeError(f"--set {path}: '{format_loc(parts[:i])}' is not a table")
            cur = cur.setdefault(p, [] if isinstance(nxt, int) else {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(cur, list) or last >= len(cur):
            raise RecipeError(f"--set {path}: index [{last}] is out of range")
        cur[last] = value
    else:
        if not isinstance(cur, dict):
            raise RecipeError(f"--set {path}: parent is not a table")
        cur[last] = value


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (number, bool, string, array, inline table) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise RecipeError(f"--set expects path=value, got {item!r}")
        path, _, value = item.partition("=")
        out.append((path.strip(), parse_value(value.strip())))
    return out


# -- loading ----------------------------------------------------------------------------------

def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{p}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{p}: not a text file: {exc}") from None


def _model_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (sub)model at ``loc``, for 'did you mean' hints."""
    cur: Any = model
    for p in loc[:-1]:
        if isinstance(p, int):
            continue
        field = getattr(cur, "model_fields", {}).get(p)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        cand = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not cand:
            return []
        cur = cand[0]
    return list(getattr(cur, "model_fields", {}))


def format_validation_error(
    exc: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = format_loc(((prefix,) if prefix else ()) + loc) or "(top level)"
        msg = err.get("msg", "invalid")
        hint = ""
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
            if model is not None and loc:
                hint = close_matches(str(loc[-1]), _model_fields(model, loc))
                fields = _model_fields(model, loc)
                if not hint and fields:
                    hint = f" (allowed: {', '.join(fields)})"
        value = err.get("input")
        shown = "" if err.get("type") in ("missing", "extra_forbidden") else f" (got {value!r})"
        lines.append(f"{source}: {where}: {msg}{shown}{hint}")
    return "\n".join(lines)


def validate_recipe(raw: dict[str, Any], source: str = "recipe", plugins=None) -> ResolvedRecipe:
    """Validate a raw recipe dict (schema and every component block)."""
    from rdmx.plugins import get_plugins

    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, source, model=Recipe)) from None
    plugins = plugins or get_plugins()
    configs: dict[str, BaseModel] = {}
    blocks: list[tuple[str, str, Component]] = [
        (path, kind, getattr(recipe, path)) for path, kind in COMPONENT_BLOCKS
    ]
    blocks += [(f"battery.encoders[{i}]", "encoders", e) for i, e in enumerate(recipe.battery.encoders)]
    blocks += [(f"eval.metrics[{i}]", "metrics", m) for i, m in enumerate(recipe.eval.metrics)]
    errors = []
    for path, kind, block in blocks:
        try:
            entry = plugins.get(kind, block.name, where=f"{source}: {path}.name")
        except RdmxError as exc:
            errors.append(str(exc))
            continue
        try:
            configs[path] = entry.config.model_validate(block.options())
        except ValidationError as exc:
            errors.append(format_validation_error(exc, source, prefix=path, model=entry.config))
    for key, values in recipe.sweep.items():
        if not isinstance(values, list) or not values:
            errors.append(f"{source}: sweep.{key}: needs a non-empty list of values")
    if errors:
        raise RecipeError("\n".join(errors))
    return ResolvedRecipe(recipe, configs, source)


def load_recipe(path: str | Path, overrides: list[str] | list[tuple[str, Any]] | None = None) -> ResolvedRecipe:
    """Read, override and validate a recipe file."""
    raw = read_toml(path)
    pairs = overrides if overrides and isinstance(overrides[0], tuple) else parse_overrides(overrides)  # type: ignore[arg-type]
    for key, value in pairs:
        set_path(raw, key, value)
    return validate_recipe(raw, str(path))


def sweep_cells(resolved: ResolvedRecipe) -> list[tuple[dict[str, Any], ResolvedRecipe]]:
    """The grid of a recipe's ``[sweep]``: one (swept values, resolved recipe) per cell."""
    grid = resolved.recipe.sweep
    if not grid:
        return [({}, resolved)]
    base = resolved.to_dict()
    base.pop("sweep", None)
    keys = list(grid)
    cells = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        raw = copy.deepcopy(base)
        values = dict(zip(keys, combo, strict=True))
        for k, v in values.items():
            set_path(raw, k, v)
        cells.append((values, validate_recipe(raw, f"{resolved.source} [sweep {values}]")))
    return cells
