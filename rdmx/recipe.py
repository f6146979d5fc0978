"""TOML recipes: schema (pydantic), loading, ``--set`` overrides, component validation, fingerprint.

A component block is a table with ``name`` plus that component's options, validated by the
config model its plugin registered. Errors are :class:`RecipeError` naming the recipe path
(``battery.encoders[2].name``), the bad value and close matches. Every model is strict (no
``"64"`` → 64) and refuses non-finite floats. Loading merges ``include`` files and
interpolates ``${ENV_VARS}`` (:mod:`rdmx.recipe_compose`); a validated recipe is checked
against the registry's metadata (:mod:`rdmx.recipe_checks`: class labels, memory).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from rdmx.compare.configs import JointSpec
from rdmx.errors import RdmxError, RecipeError, close_matches
from rdmx.fingerprint import fingerprint
from rdmx.meta import tuples_from_lists
from rdmx.recipe_compose import interpolate_env, read_recipe, read_toml
from rdmx.registry import Seed

__all__ = ["Recipe", "ResolvedRecipe", "load_recipe", "validate_recipe", "read_toml", "read_recipe",
           "set_path", "parse_value", "parse_overrides", "sweep_cells"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _tuples(cls, data: Any) -> Any:
        return tuples_from_lists(cls, data)


class Component(BaseModel):
    """``name`` plus the component's own options (validated later by its plugin's model)."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BatteryEncoder(Component):
    role: Literal["train", "heldout"] = "train"
    label: str | None = Field(default=None, pattern=NAME_PATTERN,
                              description="name in logs and metric keys (letters, digits, . _ -); defaults to the "
                                          "encoder name")
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


class ReleaseLossScale(_Strict):
    """The iRDM release's gradient scale: its loss is scaled by 1/accumulation and its gradients are
    averaged over ranks, so its effective gradient is ∇L · b / N with b its per-GPU micro batch
    (∇L / 640 for b = 8 and N = 5120). Here b is a fixed reference, not the micro batch in use."""

    reference_micro_batch: int = Field(ge=1, description="the release's per-GPU batch b (8 in the paper)")


def _loss_scale(value: Any) -> Any:
    if value == "accumulation":
        raise ValueError(
            '"accumulation" is no longer accepted: it scaled the gradient by micro_batch × world_size / N, '
            "so the same recipe optimised differently on another micro batch or GPU count. Write "
            "loss_scale = { reference_micro_batch = 8 } for the release's ∇L·b/N with its per-GPU batch b = 8, "
            "or a number s for s·∇L (1.0 = the plain gradient)"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not (0 < value < math.inf):
        raise ValueError("a number s (the gradient s·∇L) must be finite and > 0")  # one message,
    return 1.0 if value == "none" else value  # not one per member of the union


class EmaConfig(_Strict):
    """``[train.ema]``: an exponential moving average of the generator's weights (rdmx.train.ema),
    kept beside them in float32, sharded with them, checkpointed and restored exactly. It never
    changes training, so it is left out of the fingerprint."""

    half_life_images: float = Field(0.0, ge=0, description="the EMA's half-life in generated images (N per "
                                                           "step); or give decay")
    decay: float = Field(0.0, ge=0, lt=1, description="β per update (the weight of the average so far); or give "
                                                      "half_life_images")
    rampup: float = Field(0.0, ge=0, description="EDM's ramp-up: the half-life is at most rampup × the images "
                                                 "generated so far (0 = off)")
    warmup_steps: int = Field(0, ge=0, description="before this many steps the EMA follows the weights (β = 0)")
    update_every: int = Field(1, ge=1, description="steps between updates (β compounds accordingly)")
    posthoc: list[Annotated[float, Field(gt=0, lt=0.2887)]] = Field(
        default_factory=list, description="σ_rel of EDM2 power-function EMA profiles to track for post-hoc "
        "reconstruction (e.g. [0.05, 0.10]); their snapshots are the run's milestones (train.keep_every)")

    @model_validator(mode="after")
    def _one_rate(self) -> EmaConfig:
        if self.half_life_images and self.decay:
            raise ValueError("give half_life_images or decay, not both")
        if not (self.half_life_images or self.decay or self.posthoc):
            raise ValueError("an EMA needs half_life_images or decay (or posthoc profiles)")
        return self


class TrainConfig(_Strict):
    steps: int = Field(1000, ge=0)
    batch: int = Field(256, ge=1, description="generated batch N per step (global)")
    micro_batch: int | Literal["auto"] = Field(
        0, description="chunk size for gradient caching; 0 = the whole per-process batch; "
                       "'auto' = the largest divisor of the per-process batch that fits in memory")
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam betas, each in [0, 1)")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(0.0, ge=0, description="max grad norm; 0 = off")
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min: float = Field(0.0, ge=0)
    loss_scale: Annotated[Annotated[float, Field(gt=0)] | ReleaseLossScale, BeforeValidator(_loss_scale)] = Field(
        1.0, description="effective gradient = s·∇L (a number s), or the release's ∇L·b/N "
        "({ reference_micro_batch = b }); never depends on micro_batch or the GPU count")
    device: str = "auto"
    compile: bool = Field(False, description="torch.compile the generator and every encoder")
    shard: Literal["none", "fsdp"] = Field(
        "none", description="'fsdp': shard the generator with FSDP2 (per shard_units() block) under torchrun")
    activation_checkpointing: bool = Field(
        False, description="recompute each of the generator's shard_units() blocks in backward")
    sample_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every K steps (0: by time only, see checkpoint_minutes)")
    max_seconds: float = Field(
        0.0, ge=0, description="a wall-clock budget for the training loop (steps, their evaluations and checkpoints), "
        "summed over the run's sessions: the run ends at the first step boundary past it, with a checkpoint and the "
        "final evaluation; rerun with a larger budget to continue (0 = none; the paper's batch ablation: 6000)")
    checkpoint_minutes: float = Field(
        30.0, ge=0, description="also checkpoint when this many minutes of training passed since the last "
                                "checkpoint (0 = off); a run is never unprotected for longer")
    keep_last: int = Field(1, ge=1, description="rolling checkpoints kept (the newest K)")
    keep_every: int = Field(0, ge=0, description="also keep, for good, the checkpoint of every step that is a "
                                                 "multiple of M (milestones; 0 = none)")
    milestones: Literal["weights", "full"] = Field(
        "weights", description="what a milestone keeps once it leaves the rolling window: the generator's weights "
                               "(and EMA) for evaluation, or everything (resumable from it; 3× the disk)")
    ema: EmaConfig | None = Field(None, description="an EMA of the generator ([train.ema]); off when absent")
    stop_signals: list[str] = Field(
        default_factory=lambda: ["SIGTERM", "SIGINT", "SIGUSR1"],
        description="signals that stop the run at the next step boundary with a checkpoint (exit status 75)")
    log_every: int = Field(1, ge=1)
    max_skipped_fraction: float = Field(
        0.1, ge=0, le=1, description="a run that skipped more than this fraction of its steps (non-finite) ends with "
                                     "an error naming the cause, after writing its summary (trained = false)")
    max_consecutive_skips: int = Field(
        20, ge=0, description="stop the run after this many consecutive non-finite (skipped) steps; 0 = never")

    @model_validator(mode="before")
    @classmethod
    def _keep_checkpoints(cls, data: Any) -> Any:
        """rdmx 0.1's ``keep_checkpoints = true`` (weights of every checkpoint kept) is read as
        ``keep_every = checkpoint_every``: every scheduled checkpoint is a milestone."""
        if isinstance(data, dict) and "keep_checkpoints" in data:
            data = dict(data)
            if data.pop("keep_checkpoints") is True and "keep_every" not in data:
                data["keep_every"] = data.get("checkpoint_every", 0)
        return data

    @model_validator(mode="after")
    def _posthoc_snapshots(self) -> TrainConfig:
        if self.ema is not None and self.ema.posthoc and not self.keep_every:
            raise ValueError("train.ema.posthoc needs snapshots: the milestones of train.keep_every (e.g. keep_every = "
                             "checkpoint_every) are where the profiles are kept")
        return self

    @field_validator("stop_signals")
    @classmethod
    def _signals(cls, v: list[str]) -> list[str]:
        from rdmx.train.stop import signal_number

        for name in v:
            signal_number(name)
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"Adam betas must each lie in [0, 1), got {list(v)}")
        return v

    def gradient_scale(self) -> float:
        """s in the effective gradient s·∇L (see ``loss_scale``)."""
        if isinstance(self.loss_scale, ReleaseLossScale):
            return self.loss_scale.reference_micro_batch / self.batch
        return float(self.loss_scale)

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
    n: int = Field(16384, ge=2, description="generated samples and real rows per set for SW_rK and FD")
    mmd_n: int | None = Field(
        None, ge=2, description="rows per set (generated, train, val) for MMDr; None = n. The paper's protocol: "
        "50,000 (smaller values are labelled small-sample: MMDr − 1 shrinks with the row count)")
    chunk: int = Field(0, ge=0, description="samples generated and encoded at once (no gradients); "
                                             "0 = 4 × the training micro batch")
    directions: int = Field(1024, ge=1)
    seed: Seed = 0
    suite: list[Literal["sw", "mmdr", "fd"]] = Field(
        default_factory=lambda: ["sw", "mmdr", "fd"], min_length=1,
        description="SW_rK, MMDr (RFF) and per-encoder FD against the real banks")
    metrics: list[Component] = Field(default_factory=list)
    quantize: Literal["none", "uint8"] = Field(
        "none", description="samples before the encoders: none = the generator's float output; uint8 = rounded to "
        "8-bit levels, as a saved PNG / samples.npz holds them (what evaluating files measures)")

    def bank_rows(self) -> int:
        """Real rows per split the evaluation banks need (the largest set any metric uses)."""
        return max(self.n, self.mmd_n or 0)


class ReferenceConfig(_Strict):
    cache_dir: str = ".rdmx-cache"
    floor_draws: int = Field(8, ge=1)
    floor_rows: int = Field(5120, ge=2)
    batch_size: int = Field(64, ge=1, description="images per batch during feature extraction")
    workers: int = Field(0, ge=0, description="DataLoader workers decoding images (folders: use several)")
    rows: Literal["random", "first"] = Field(
        "random", description="the real rows of the constant k_rr (mmd-nystrom) and of MMDr's train/val sets: "
        "random = seeded subsamples of the whole pool; first = the first rows in the pool's order, as the paper's "
        "release computed them (its class-sorted pool: k_rr over the first estimator.krr_subsample rows, MMDr over "
        "the first eval.mmd_n of each split)")

    def real_rows(self, eval_config: EvalConfig) -> dict[str, Any]:
        """The row rule's arguments of ``build_references``."""
        first = (eval_config.mmd_n or eval_config.n) if self.rows == "first" else 0
        return {"rows": self.rows, "first_rows": first}


class TrackingConfig(BaseModel):
    """``backend`` names a registered tracker (mlflow, none, or a plugin's); ``run_name`` is
    common to all; every other key is the tracker's option (e.g. mlflow's ``uri``,
    ``experiment``), validated by its config model.

    ``backends = ["mlflow", "wandb"]`` tracks to several at once; each one's options then go in
    a table of its own name (``[tracking.wandb] project = "..."``)."""

    model_config = ConfigDict(extra="allow", strict=True)
    backend: str = "mlflow"
    backends: list[str] | None = Field(None, description="several trackers at once (instead of backend)")
    run_name: str | None = None

    def names(self) -> list[str]:
        """The trackers this table asks for, in order (``none`` alone means tracking off)."""
        return list(self.backends) if self.backends else [self.backend]

    def blocks(self, accepts: Callable[[str], set[str]] = lambda name: set(),
               known: set[str] = frozenset()) -> list[tuple[str, str, dict[str, Any]]]:
        """(config path, tracker name, options) of every tracker: one ``tracking`` block for
        ``backend``, a ``tracking.<name>`` block per entry of ``backends``. A tracker gets the flat
        keys its config declares (``accepts(name)``) and, among several, its own table's keys; a
        flat key of another registered tracker (``known``) is left to that one, so switching
        trackers never needs the table edited, and a key no tracker knows stays (to be reported)."""
        extra = self.model_extra or {}
        names = self.names()
        flat = {k: v for k, v in extra.items() if not (self.backends and k in self.backends)}
        out = []
        for n in names:
            fields = accepts(n)
            mine = {k: v for k, v in flat.items() if k in fields or (k not in known and not self.backends)}
            if self.backends:
                out.append((f"tracking.{n}", n, {**mine, **(extra.get(n) or {})}))
            else:
                out.append(("tracking", n, mine))
        return out

    def unclaimed(self, accepts: Callable[[str], set[str]], known: set[str]) -> list[str]:
        """Flat keys that no tracker knows, among several backends (a typo)."""
        if not self.backends:
            return []
        return [k for k in (self.model_extra or {}) if k not in self.backends and k not in known]

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _several(self) -> TrackingConfig:
        if self.backends is None:
            return self
        if not self.backends:
            raise ValueError("tracking.backends: needs at least one tracker name")
        if len(set(self.backends)) != len(self.backends):
            raise ValueError(f"tracking.backends: {self.backends} names a tracker twice")
        if "backend" in self.model_fields_set and self.backend not in self.backends:
            raise ValueError(f"tracking: backend = {self.backend!r} is not among backends = {self.backends}; "
                             f"give one tracker (backend) or several (backends)")
        for key in self.backends:
            if not isinstance((self.model_extra or {}).get(key, {}), dict):
                raise ValueError(f"tracking.{key}: must be a table of {key}'s options")
        return self


class JointBlock(JointSpec):
    """The law matched (``rdmx.compare.configs.JointSpec``) plus, for ``kind = "text"``, the frozen
    text tower τ that embeds captions and prompts (an encoder block; default ``siglip2-text``)."""

    text_encoder: Component | None = Field(
        default=None, description="text encoder for kind = 'text' (default: siglip2-text)")

    @model_validator(mode="after")
    def _default_text_encoder(self) -> JointBlock:
        if self.kind == "text" and self.text_encoder is None:
            self.text_encoder = Component(name="siglip2-text")
        return self


class Recipe(_Strict):
    name: str = Field("run", pattern=NAME_PATTERN,
                      description="names the run and its default folder runs/<name>-<fingerprint>: "
                                  "letters, digits, . _ - (no path separators)")
    seed: Seed = 0
    data: Component
    generator: Component
    estimator: Component = Field(default_factory=lambda: Component(name="mmd-nystrom"))
    joint: JointBlock = Field(default_factory=JointBlock, description="the law matched: marginal, class or text")
    prompts: Component | None = Field(
        default=None, description="the generator's prompt pool (default: the captions of captioned data)")
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
from rdmx.registry import RESERVED_FIELDS as _RESERVED  # noqa: E402 - one list of the reserved keys
# settings that change how a run is observed or stored, never its results (kept out of the fingerprint)
NOT_IN_FINGERPRINT = ("train.checkpoint_every", "train.log_every", "train.sample_every",
                      "train.max_consecutive_skips", "train.keep_checkpoints", "reference.workers",
                      "train.max_skipped_fraction",
                      "train.checkpoint_minutes", "train.keep_last", "train.keep_every", "train.stop_signals",
                      "train.milestones", "train.ema", "train.max_seconds")


class ResolvedRecipe:
    """A validated recipe with every component's config model instance."""

    def __init__(self, recipe: Recipe, configs: dict[str, BaseModel], source: str):
        self.recipe = recipe
        self.configs = configs  # recipe path -> validated config (e.g. "battery.encoders[0]")
        self.source = source

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: defaults filled in, component options from their models."""
        out = self.recipe.model_dump(mode="json", exclude={"sweep"})
        # optional blocks that are absent stay absent (recipes without them keep their fingerprints)
        if out.get("prompts") is None:
            out.pop("prompts", None)
        if out["train"].get("ema") is None:
            out["train"].pop("ema", None)
        if out["joint"].get("text_encoder") is None:
            out["joint"].pop("text_encoder", None)
        tracking = self.recipe.tracking
        if tracking.backends:  # each tracker's resolved options in a table of its name
            out["tracking"] = {"backends": list(tracking.backends), "run_name": tracking.run_name,
                               **{n: {} for n in tracking.backends}}
        else:
            out["tracking"].pop("backends", None)
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
        """Hash of everything that changes the results: the resolved recipe without tracking and
        the settings in ``NOT_IN_FINGERPRINT``, ``reference.cache_dir`` normalised, and without
        ``train.steps`` under a constant learning rate."""
        d = self.to_dict()
        d.pop("tracking", None)
        if d["train"].get("lr_schedule") == "constant":
            # a constant-rate run's first k steps do not depend on its length, so raising train.steps
            # continues the same run from its last checkpoint (a cosine schedule depends on it)
            d["train"].pop("steps", None)
        for path in NOT_IN_FINGERPRINT:
            table, _, key = path.rpartition(".")
            d.get(table, {}).pop(key, None)
        ref = d.get("reference", {})
        if ref.get("rows") == "random":  # the default: recipes from before the setting keep their fingerprints
            ref.pop("rows")
        if d.get("eval", {}).get("quantize") == "none":  # likewise
            d["eval"].pop("quantize")
        if isinstance(ref.get("cache_dir"), str):
            ref["cache_dir"] = os.path.normpath(ref["cache_dir"])
        for key in list(d.get("sweep", {})):
            if key in NOT_IN_FINGERPRINT or key.startswith("tracking."):
                d["sweep"].pop(key)
        if "sweep" in d and not d["sweep"]:
            d.pop("sweep")
        return fingerprint(d)

    def config(self, path: str) -> BaseModel:
        return self.configs[path]


def tracker_fields(plugins) -> tuple[Callable[[str], set[str]], set[str]]:
    """(name → the option names of that registered tracker's config (empty if unknown), the
    option names of every registered tracker but ``run_name``/``backend``/``backends``)."""

    def accepts(name: str) -> set[str]:
        try:
            return set(plugins.get("trackers", name).config.model_fields)
        except RdmxError:
            return set()

    known = set().union(*(accepts(n) for n in plugins.registry("trackers").names()))
    return accepts, known - set(TrackingConfig.model_fields)


# -- paths ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _split_path(path: str) -> list[str | int]:
    if re.search(r"\[\s*-\d+\s*\]", path):
        raise RecipeError(f"bad recipe path {path!r}: indices count from 0 and cannot be negative "
                          f"(battery.encoders[0] is the first entry)")
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
    """Set ``value`` at ``path`` in a raw recipe dict, creating tables as needed.

    ``sweep.<recipe path>`` sets one swept field: ``sweep.train.lr=[1e-3, 1e-4]`` is the
    ``[sweep]`` entry ``"train.lr" = [1e-3, 1e-4]``."""
    if path.startswith("sweep.") and len(path) > len("sweep."):
        _split_path(path)  # the same syntax check
        sweep = d.setdefault("sweep", {})
        if not isinstance(sweep, dict):
            raise RecipeError(f"--set {path}: 'sweep' is not a table")
        sweep[path[len("sweep."):]] = value
        return
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


# -- validation ------------------------------------------------------------------------------

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


def _shown(value: Any, limit: int = 80) -> str:
    """`` (got 'x')`` for a scalar or short value; nothing for a table or long list (the error
    names its path: no dump of a whole table)."""
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and len(repr(value)) > limit):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= limit else text[: limit - 3] + '...'})"


def validation_problems(
    exc: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None
) -> list[tuple[str, str, str]]:
    """(recipe path, error type, one-line message) of each error."""
    out = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        path = format_loc(((prefix,) if prefix else ()) + loc)
        msg = err.get("msg", "invalid")
        hint = ""
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
            if model is not None and loc:
                fields = _model_fields(model, loc)
                hint = close_matches(str(loc[-1]), fields)
                if not hint and fields:
                    hint = f" (allowed: {', '.join(fields)})"
        shown = "" if err.get("type") in ("missing", "extra_forbidden") else _shown(err.get("input"))
        out.append((path, err.get("type", ""), f"{source}: {path or '(top level)'}: {msg}{shown}{hint}"))
    return out


def format_validation_error(
    exc: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    return "\n".join(m for _, _, m in validation_problems(exc, source, prefix, model))


class _Problems(RecipeError):
    """A RecipeError that also carries (path, error type) of each problem (for ``--set`` retries)."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        super().__init__("\n".join(m for _, _, m in problems))
        self.problems = problems


def validate_recipe(raw: dict[str, Any], source: str = "recipe", plugins=None, check: bool = True) -> ResolvedRecipe:
    """Validate a raw recipe dict: the schema, every component block with its plugin's config
    model, the tracker's options, and (``check``) the metadata checks of :mod:`rdmx.recipe_checks`."""
    from rdmx.plugins import get_plugins
    from rdmx.recipe_checks import check_recipe

    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise _Problems(validation_problems(exc, source, model=Recipe)) from None
    plugins = plugins or get_plugins()
    configs: dict[str, BaseModel] = {}
    blocks: list[tuple[str, str, str, dict[str, Any]]] = [
        (path, kind, getattr(recipe, path).name, getattr(recipe, path).options()) for path, kind in COMPONENT_BLOCKS
    ]
    blocks += [(f"battery.encoders[{i}]", "encoders", e.name, e.options())
               for i, e in enumerate(recipe.battery.encoders)]
    blocks += [(f"eval.metrics[{i}]", "metrics", m.name, m.options()) for i, m in enumerate(recipe.eval.metrics)]
    if recipe.prompts is not None:
        blocks.append(("prompts", "prompts", recipe.prompts.name, recipe.prompts.options()))
    if recipe.joint.text_encoder is not None:
        blocks.append(("joint.text_encoder", "encoders", recipe.joint.text_encoder.name,
                       recipe.joint.text_encoder.options()))
    accepts, known = tracker_fields(plugins)
    blocks += [(path, "trackers", name, options)
               for path, name, options in recipe.tracking.blocks(accepts, known)]
    problems: list[tuple[str, str, str]] = [
        (f"tracking.{k}", "extra_forbidden", f"{source}: tracking.{k}: no tracker has this option (backends = "
         f"{recipe.tracking.backends}; a tracker's own options may go in [tracking.<name>])")
        for k in recipe.tracking.unclaimed(accepts, known)]
    for path, kind, name, options in blocks:
        where = f"{path}.name"
        if kind == "trackers":
            where = "tracking.backends" if recipe.tracking.backends else "tracking.backend"
        try:
            entry = plugins.get(kind, name, where=f"{source}: {where}")
        except RdmxError as exc:
            problems.append((where, "unknown_name", str(exc)))
            continue
        try:
            configs[path] = entry.config.model_validate(options)
        except ValidationError as exc:
            problems += validation_problems(exc, source, prefix=path, model=entry.config)
    for key, values in recipe.sweep.items():
        if not isinstance(values, list) or not values:
            problems.append((f"sweep.{key}", "sweep", f"{source}: sweep.{key}: needs a non-empty list of values"))
            continue
        paths = sweep_paths(key)
        if len(paths) > 1:
            bad = [v for v in values if not isinstance(v, list) or len(v) != len(paths)]
            if bad:
                problems.append((f"sweep.{key}", "sweep", f"{source}: sweep.\"{key}\": ties {len(paths)} paths, so "
                                 f"every value must be a list of {len(paths)} (got {bad[0]!r})"))
    if problems:
        raise _Problems(problems)
    resolved = ResolvedRecipe(recipe, configs, source)
    if check:
        found = check_recipe(resolved, plugins)
        if found:
            raise RecipeError("\n".join(found))
    return resolved


def _as_pairs(overrides: list[str] | list[tuple[str, Any]] | None) -> list[tuple[str, Any, str | None]]:
    """(path, value, the text it was parsed from — None when given parsed)."""
    out = []
    for item in overrides or []:
        if isinstance(item, tuple):
            out.append((item[0], item[1], None))
        else:
            (path, value), = parse_overrides([item])
            out.append((path, value, item.partition("=")[2].strip()))
    return out


def load_recipe(path: str | Path, overrides: list[str] | list[tuple[str, Any]] | None = None) -> ResolvedRecipe:
    """Read a recipe file (includes merged), apply ``--set`` overrides, interpolate environment
    variables, validate. An override whose text parsed as a number or bool where the field
    takes a string is retried as the plain text (``--set tracking.run_name=2024``)."""
    source = str(path)
    base = read_recipe(path)
    pairs = _as_pairs(overrides)

    def attempt(as_text: set[str]) -> ResolvedRecipe:
        raw = copy.deepcopy(base)
        for key, value, text in pairs:
            set_path(raw, key, text if key in as_text and text is not None else value)
        return validate_recipe(interpolate_env(raw, source), source)

    as_text: set[str] = set()
    while True:  # schema errors come before component errors: retry until no override is left to fix
        try:
            return attempt(as_text)
        except _Problems as exc:
            wrong_type = {p for p, kind, _ in exc.problems if kind == "string_type"}
            retry = {k for k, v, text in pairs
                     if k in wrong_type and k not in as_text and text is not None and not isinstance(v, str)}
            if not retry:
                raise
            as_text |= retry


def sweep_paths(key: str) -> list[str]:
    """The recipe paths a ``[sweep]`` key sets: one, or several tied together (``"a.b, c.d"``)."""
    return [p.strip() for p in key.split(",") if p.strip()]


def with_overrides(resolved: ResolvedRecipe, overrides: list[str]) -> ResolvedRecipe:
    """The resolved recipe with ``--set``-style overrides applied (validated again)."""
    raw = resolved.to_dict()
    for key, value in parse_overrides(overrides):
        set_path(raw, key, value)
    return validate_recipe(raw, f"{resolved.source} [{', '.join(overrides)}]")


def sweep_cells(resolved: ResolvedRecipe) -> list[tuple[dict[str, Any], ResolvedRecipe]]:
    """The grid of a recipe's ``[sweep]``: one (swept values by path, resolved recipe) per cell.

    Keys are crossed; a key naming several paths (``"train.batch, train.lr" = [[512, 5e-7], ...]``)
    moves them together, so one axis of the grid can tie a learning rate to its batch size."""
    grid = resolved.recipe.sweep
    if not grid:
        return [({}, resolved)]
    base = resolved.to_dict()
    base.pop("sweep", None)
    keys = list(grid)
    cells = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        raw = copy.deepcopy(base)
        values: dict[str, Any] = {}
        for key, value in zip(keys, combo, strict=True):
            paths = sweep_paths(key)
            values.update(zip(paths, value if len(paths) > 1 else [value], strict=True))
        for k, v in values.items():
            set_path(raw, k, v)
        cells.append((values, validate_recipe(raw, f"{resolved.source} [sweep {values}]")))
    return cells
