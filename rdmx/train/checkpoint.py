"""Sharded, sealed checkpoints (``rdmx-checkpoint-2``) on ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a folder ``RUN/checkpoints/step-NNNNNN/``:

* two DCP checkpoints, ``model/`` (the state-dict entries ``generator`` and, when the run keeps
  one, ``ema``) and ``optim/`` (``optimizer``: AdamW's moments keyed by parameter name), each
  DCP's ``.metadata`` and ``__<rank>_<i>.distcp`` files: every rank writes its own shards, no
  full state is gathered anywhere. A milestone that left the rolling window keeps ``model/``
  only (weights for evaluation; ``train.milestones``);
* ``state.pt``, written by rank 0: the small state (step, recipe fingerprint, tracking run id,
  balancer, the RNG state of every rank, the run's history);
* ``manifest.json``, written last: the size and sha256 of every other file, sealed by the sha256
  of its own content (:func:`rdmx.files.write_sealed_json`).

A folder without a manifest is a save that was cut short: it is not a checkpoint, never read,
and removed when the run resumes (:func:`clean_partial`). A manifest that does not match its own
checksum, or a file that does not match the manifest, is refused naming the file; nothing is
removed or overwritten then.

A checkpoint loads on any world size, sharded or not: DCP re-shards on load, so the restored
weights, optimiser moments and step equal the saved ones bit for bit (2 → 1, 1 → 2, 2 → 4
ranks); ``rdmx eval`` / ``rdmx sample`` read one in a single process without a process group.
The single-file checkpoints of rdmx 0.1 (``checkpoints/last.pt``) are still read
(:mod:`rdmx.train.legacy_checkpoint`); :func:`open_checkpoint` returns either as a
:class:`Checkpoint`. Writing, asynchronously and with retention: :mod:`rdmx.train.checkpointer`.
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.files import IntegrityError, file_sha256, load_torch, read_sealed_json

FORMAT = "rdmx-checkpoint-2"
MANIFEST = "manifest.json"
SMALL = "state.pt"
LEGACY_FILE = "last.pt"  # rdmx 0.1's single file, in RUN/checkpoints/
# DCP warns on every save and load in one process that it assumes one process: that is the intent here
warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled, unavailable or uninitialized",
                        category=UserWarning)
_STEP = re.compile(r"step-(\d{6,})")
GROUPS = ("model", "optim")  # a checkpoint's DCP folders: the weights (generator, EMAs) and the optimiser state
_OWN_FILE = re.compile(r"(model|optim|state\.pt|\..*\.tmp-.*)")  # what a save writes in a checkpoint folder
REMEDY = ("restore the file from a copy, or move this checkpoint folder away to resume from the one before it, "
          "or start over with --fresh")


def folder_for(root: str | Path, step: int) -> Path:
    """``root/step-NNNNNN``: the folder of the checkpoint taken after ``step`` steps."""
    return Path(root) / f"step-{int(step):06d}"


def step_of(folder: str | Path) -> int | None:
    m = _STEP.fullmatch(Path(folder).name)
    return int(m.group(1)) if m else None


def scan(root: str | Path) -> list[tuple[int, Path, bool]]:
    """``(step, folder, sealed)`` of every checkpoint folder in ``root``, by step; ``sealed``: it
    has a manifest (whether that manifest is intact is checked when it is read)."""
    root = Path(root)
    found = []
    try:
        children = list(root.iterdir()) if root.is_dir() else []
    except FileNotFoundError:
        return []
    for p in children:
        step = step_of(p)
        if step is not None and p.is_dir() and not p.is_symlink():
            found.append((step, p, (p / MANIFEST).is_file()))
    return sorted(found)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The sealed manifest of a checkpoint folder; refused (naming it) when missing or altered."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise RdmxError(f"{folder}: not a sealed rdmx checkpoint (no {MANIFEST}: a save that was cut short); "
                        "use another checkpoint of the run")
    manifest = read_sealed_json(path, what="a checkpoint manifest", remedy=REMEDY)
    files = manifest.get("files")
    if manifest.get("format") != FORMAT or not isinstance(files, dict) or not isinstance(manifest.get("step"), int):
        raise IntegrityError(path, f"not a complete {FORMAT} manifest", "a checkpoint manifest", REMEDY)
    return manifest


def verify_files(folder: str | Path, manifest: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """Problems of the files the manifest lists (``names``: a subset, e.g. one rank's share):
    missing, of another size, or of another sha256; each problem names its file."""
    folder = Path(folder)
    problems = []
    for name in sorted(manifest["files"]) if names is None else names:
        info = manifest["files"][name]
        p = folder / name
        if not p.is_file():
            problems.append(f"{p}: missing (listed in {MANIFEST})")
        elif p.stat().st_size != info["bytes"]:
            problems.append(f"{p}: {p.stat().st_size} bytes where {MANIFEST} says {info['bytes']} (cut short or altered)")
        elif file_sha256(p) != info["sha256"]:
            problems.append(f"{p}: content does not match the sha256 in {MANIFEST} (altered or corrupt)")
    return problems


def refuse(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RdmxError(f"{problems[0]}{more}; a damaged checkpoint is never used: {REMEDY}")


def clean_partial(root: str | Path) -> list[Path]:
    """Remove checkpoint folders that were never sealed (a save cut short by a kill); a folder
    holding anything a save does not write is left alone. Returns what went."""
    gone = []
    for _, folder, sealed in scan(root):
        if sealed:
            continue
        if all(_OWN_FILE.fullmatch(p.name) for p in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


def latest(root: str | Path) -> Path | None:
    """The newest sealed checkpoint folder in ``root`` (unsealed ones are ignored), else rdmx 0.1's
    ``last.pt`` when it is there, else None."""
    sealed = [folder for _, folder, ok in scan(root) if ok]
    if sealed:
        return sealed[-1]
    legacy = Path(root) / LEGACY_FILE
    return legacy if legacy.is_file() else None


def locate(path: str | Path) -> Path:
    """A checkpoint named on the command line: a sealed ``step-NNNNNN`` folder, a run's
    ``checkpoints/`` folder or the run folder itself (their newest checkpoint), or a 0.1 ``.pt`` file."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise RdmxError(f"checkpoint not found: {path}")
    if (path / MANIFEST).is_file() or step_of(path) is not None:
        return path
    for root in (path, path / "checkpoints"):
        found = latest(root)
        if found is not None:
            return found
    raise RdmxError(f"{path}: holds no sealed checkpoint (a checkpoint is a RUN/checkpoints/step-NNNNNN folder; "
                    f"giving the run folder or its checkpoints/ folder picks the newest)")


@dataclass
class Checkpoint:
    """A located checkpoint of either format: its step, recipe fingerprint, tracking run id, the
    small state (``small``: balancer, RNG, ``extra`` = the run's history) and where its tensors are."""

    path: Path
    step: int
    fingerprint: str
    run_id: str | None
    small: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None  # the sharded format
    legacy: dict[str, Any] | None = None  # rdmx 0.1's single file, memory-mapped

    @property
    def extra(self) -> dict[str, Any]:
        return self.small.get("extra") or {}

    @property
    def keys(self) -> list[str]:
        """The state-dict entries it holds: generator, optimizer, ema."""
        if self.legacy is not None:
            return [k for k in ("generator", "optimizer", "ema") if self.legacy.get(k) is not None]
        return list(self.manifest.get("keys", ["generator", "optimizer"]))

    def tensor_shapes(self, key: str = "generator") -> dict[str, tuple[int, ...]]:
        """``{name: shape}`` of the tensors under ``key`` (from DCP's metadata; no tensor is read)."""
        if self.legacy is not None:
            return {k: tuple(v.shape) for k, v in (self.legacy.get(key) or {}).items() if torch.is_tensor(v)}
        from torch.distributed.checkpoint import FileSystemReader

        meta = FileSystemReader(str(self.path / group_of(key))).read_metadata().state_dict_metadata
        prefix = key + "."
        return {k[len(prefix):]: tuple(getattr(v, "size", ())) for k, v in meta.items()
                if k.startswith(prefix) and hasattr(v, "size")}

    def check_fits(self, template: dict[str, torch.Tensor], key: str = "generator", what: str = "generator") -> None:
        """Refuse, listing them, the missing, unexpected and ill-shaped tensors of ``key`` against
        ``template`` (the state dict of the module about to receive them)."""
        saved = self.tensor_shapes(key)
        if not saved:
            raise RdmxError(f"{self.path}: holds no {key} weights")
        mismatch(saved, {k: tuple(v.shape) for k, v in template.items()}, self.path, what)

    def read(self, key: str, template: dict[str, torch.Tensor], what: str = "generator") -> dict[str, torch.Tensor]:
        """The tensors under ``key`` as a plain state dict shaped like ``template`` (one process, no
        process group; ``template`` is left untouched)."""
        self.check_fits(template, key, what)
        if self.legacy is not None:
            return dict(self.legacy[key])
        state = {k: torch.empty_like(v, device="cpu") for k, v in template.items()}
        dcp_load({key: state}, self.path / group_of(key))
        return state

    def generator_state(self, template: torch.nn.Module, key: str = "generator") -> dict[str, torch.Tensor]:
        """The generator's raw weights as a plain state dict shaped like ``template``'s."""
        return self.read(key, template.state_dict())

    def weights_choice(self, weights: str = "auto") -> str:
        """``raw`` or ``ema``: ``auto`` is the EMA when the checkpoint holds one."""
        if weights not in ("auto", "raw", "ema"):
            raise RdmxError(f"--weights must be auto, ema or raw, got {weights!r}")
        if weights == "ema" and "ema" not in self.keys:
            raise RdmxError(f"{self.path}: holds no EMA of the generator (its run had no [train.ema]); use --weights raw")
        return ("ema" if "ema" in self.keys else "raw") if weights == "auto" else weights

    def load_generator(self, generator: torch.nn.Module, weights: str = "auto") -> str:
        """Load the raw weights into an unsharded ``generator``, then its EMA over the trainable
        parameters when ``weights`` picks it (see :meth:`weights_choice`); non-finite weights are
        refused. Returns the choice."""
        choice = self.weights_choice(weights)
        state = self.generator_state(generator)
        refuse_non_finite(state, self.path)
        generator.load_state_dict(state)
        if choice == "ema":
            params = {n: p for n, p in generator.named_parameters() if p.requires_grad}
            ema = self.read("ema", {n: p.detach() for n, p in params.items()}, "generator's EMA")
            refuse_non_finite(ema, self.path)
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(ema[n])
        return choice


def group_of(key: str) -> str:
    """The DCP folder of a checkpoint that holds the state-dict entry ``key``."""
    return "optim" if key == "optimizer" else "model"


def split_groups(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """State-dict entries by the DCP folder that holds them (empty folders left out)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        out.setdefault(group_of(key), {})[key] = value
    return out


def mismatch(saved: dict[str, tuple], expected: dict[str, tuple], path: Path | str, what: str) -> None:
    """One message listing missing, unexpected and ill-shaped keys (none: returns)."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = sorted(k for k in set(saved) & set(expected) if tuple(saved[k]) != tuple(expected[k]))
    if not (missing or unexpected or shapes):
        return

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")

    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {few(unexpected)}")
    if shapes:
        parts.append("other shapes: " + few([f"{k} {list(saved[k])} vs {list(expected[k])}" for k in shapes]))
    raise RdmxError(f"{path}: its weights do not fit this recipe's {what} ({'; '.join(parts)}); use the recipe "
                    f"that made it")


def refuse_non_finite(state: dict[str, Any], path: Path | str) -> None:
    from rdmx.train.shard import local

    bad = [k for k, v in state.items()
           if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(local(v)).all()]
    if bad:
        raise IntegrityError(path, f"holds non-finite generator weights ({', '.join(bad[:3])})", "an rdmx checkpoint",
                             "use an earlier checkpoint, or start over with --fresh")


def dcp_load(state: dict[str, Any], folder: Path, process_group=None) -> None:
    """``torch.distributed.checkpoint.load`` into ``state`` in place (one process when no process
    group is initialised); a checkpoint that does not fit is one RdmxError."""
    import torch.distributed as tdist
    import torch.distributed.checkpoint as dcp

    no_dist = not (tdist.is_available() and tdist.is_initialized())
    try:
        dcp.load(state, storage_reader=dcp.FileSystemReader(str(folder)), process_group=process_group,
                 no_dist=no_dist)
    except Exception as exc:  # noqa: BLE001 - DCP wraps reader errors in CheckpointException
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RdmxError(f"{folder}: cannot be read into this recipe's training state ({first})") from None


def _load_small(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    small = load_torch(folder / SMALL, what="a checkpoint's small state", remedy=REMEDY)
    if small.get("step") != manifest["step"] or small.get("fingerprint") != manifest.get("fingerprint"):
        raise IntegrityError(folder / SMALL, f"does not belong with {MANIFEST} (step or fingerprint differ)",
                             "a checkpoint's small state", REMEDY)
    return small


def recipe_differences(made_by: Path, current: dict[str, Any]) -> list[str]:
    """Recipe paths whose values differ between a run's ``recipe.resolved.toml`` and ``current``."""
    import tomllib

    from rdmx.track.base import flatten

    try:
        old = flatten(tomllib.loads(made_by.read_text()))
    except (OSError, ValueError):
        return []
    new = flatten(current)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith("tracking."))


def check_fingerprint(path: Path, found: str, fingerprint: str | None, current: dict[str, Any] | None = None) -> None:
    if fingerprint is None or found == fingerprint:
        return
    run = path.parent.parent if path.parent.name in ("checkpoints", "posthoc") else path.parent
    made_by = run / "recipe.resolved.toml"  # written in every run (and sweep cell) folder
    hint = f" (its recipe: {made_by})" if made_by.is_file() else " (rdmx show prints a recipe's fingerprint)"
    diffs = recipe_differences(made_by, current) if current is not None and made_by.is_file() else []
    if diffs:
        hint += f"; it differs in {', '.join(diffs[:4])}{' and more' if len(diffs) > 4 else ''}"
        if "train.steps" in diffs and (current.get("train") or {}).get("lr_schedule") == "cosine":
            hint += (" (under lr_schedule = \"cosine\" the schedule depends on train.steps, so a longer run is "
                     "another run)")
    raise RdmxError(f"{path}: checkpoint of recipe fingerprint {found}, not {fingerprint}: another recipe made "
                    f"it{hint}; use that recipe, or give this run another --out (or start over with --fresh)")


def open_checkpoint(path: str | Path, fingerprint: str | None = None, *, verify: bool = True,
                    recipe: dict[str, Any] | None = None) -> Checkpoint:
    """The checkpoint at ``path`` (see :func:`locate`), its files verified against the manifest
    (``verify=False``: the caller verifies, e.g. split across ranks) and its recipe checked
    (``recipe``: the resolved recipe in use, to name what differs)."""
    path = locate(path)
    if path.is_file():
        from rdmx.train.legacy_checkpoint import load_checkpoint

        legacy = load_checkpoint(path, fingerprint)
        small = {k: legacy.get(k) for k in ("balancer", "torch_rng", "cuda_rng", "extra", "micro_batch")}
        return Checkpoint(path, int(legacy["step"]), legacy["fingerprint"], legacy.get("run_id"), small, legacy=legacy)
    manifest = read_manifest(path)
    check_fingerprint(path, manifest.get("fingerprint"), fingerprint, recipe)
    if verify:
        refuse(verify_files(path, manifest))
    small = _load_small(path, manifest)
    return Checkpoint(path, manifest["step"], manifest["fingerprint"], small.get("run_id"), small, manifest=manifest)


def verify_split(ckpt: Checkpoint, dist, group=None) -> None:
    """Every rank verifies its share of the checkpoint's files; any problem on any rank is refused
    on all of them, naming the file."""
    names = sorted(ckpt.manifest["files"])[dist.rank :: dist.world]
    problems = verify_files(ckpt.path, ckpt.manifest, names)
    if dist.world > 1:
        import torch.distributed as tdist

        shares: list = [None] * dist.world
        tdist.all_gather_object(shares, problems, group=group)
        problems = [p for share in shares for p in share]
    refuse(problems)


def restore_state(ckpt: Checkpoint, modules: dict[str, Any], generator: torch.nn.Module, optimizer,
                  dist, groups: dict[str, Any] | None = None) -> None:
    """Load a sharded-format checkpoint for training, on every rank: the files verified (a share
    each), then each state-dict entry of ``modules`` (``generator``: the module; the EMA's entries:
    dicts of tensors, loaded in place) and the optimiser state read into this rank's shards,
    whatever world size saved them."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    groups = groups or {}
    verify_split(ckpt, dist, groups.get("model"))
    if ckpt.manifest.get("pruned"):
        raise RdmxError(f"{ckpt.path}: a milestone that keeps the generator's weights only, so training cannot "
                        "resume from it (rdmx eval / sample read it); resume from a newer checkpoint, or keep "
                        'milestones whole with train.milestones = "full"')
    missing = sorted(set(modules) - set(ckpt.keys))
    if missing:
        raise RdmxError(f"{ckpt.path}: holds no {', '.join(missing)} state, which this run keeps; resume it with the "
                        f"settings that made it, or start over with --fresh")
    state: dict[str, Any] = {k: get_model_state_dict(m) if isinstance(m, torch.nn.Module) else m
                             for k, m in modules.items()}
    if "optimizer" in ckpt.keys:  # absent when saved before the optimiser's first step
        state["optimizer"] = get_optimizer_state_dict(generator, optimizer)
    for key in modules:
        ckpt.check_fits(state[key], key)
    for group, part in split_groups(state).items():
        dcp_load(part, ckpt.path / group, process_group=groups.get(group))
    for key, module in modules.items():
        refuse_non_finite(state[key], ckpt.path)
        if isinstance(module, torch.nn.Module):
            set_model_state_dict(module, state[key])
    if "optimizer" in state:
        set_optimizer_state_dict(generator, optimizer, state["optimizer"])
