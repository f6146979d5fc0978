"""Writing a run's checkpoints: sharded, asynchronous, sealed, with retention.

:meth:`Checkpointer.save` at a step boundary, on every rank:

1. waits for the previous save to be sealed (at most one save is in flight);
2. rank 0 clears a folder of the same step left by a save cut short, and every rank's RNG state
   is gathered for the small state;
3. DCP's ``async_save`` stages a CPU copy of this rank's shards and returns, so the next
   optimiser step cannot change what is written; a background thread writes the shards while the
   loop goes on. DCP coordinates over a process group of its own (gloo), so its collectives never
   interleave with the training's;
4. rank 0 writes the small state (``state.pt``);
5. in the background, each rank hashes the files it wrote, rank 0 gathers the hashes and writes
   ``manifest.json`` last (the seal), then applies retention: the newest ``keep_last`` checkpoints
   and every ``keep_every``-th step (milestones) are kept; an older one is removed only after the
   new one is sealed, and a milestone that leaves the rolling window keeps its weights only
   (``milestones = "weights"``: the optimiser's moments are twice the weights). Each seal prints
   the disk the run's checkpoints take.

:meth:`wait` (before the next save, at the end of a run, before a stop) raises what went wrong in
the background as one message; the previous checkpoint is intact then.
"""

from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable

import torch

from rdmx.errors import RdmxError
from rdmx.files import disk_full, file_sha256, human_size, need_disk, save_torch, tensor_bytes, write_sealed_json
from rdmx.train.checkpoint import FORMAT, GROUPS, MANIFEST, SMALL, folder_for, read_manifest, scan, split_groups


def keep(steps: list[int], keep_last: int, keep_every: int) -> set[int]:
    """The steps retention keeps: the newest ``keep_last`` and every multiple of ``keep_every``."""
    kept = set(sorted(steps)[-keep_last:]) if keep_last > 0 else set()
    if keep_every:
        kept |= {s for s in steps if s % keep_every == 0}
    return kept


class Checkpointer:
    """Saves of one run into ``root`` (``RUN/checkpoints``); every rank makes one (collectively)."""

    def __init__(self, root: str | Path, dist, *, keep_last: int = 1, keep_every: int = 0, milestones: str = "weights",
                 log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.dist = dist
        self.keep_last, self.keep_every, self.milestones = keep_last, keep_every, milestones
        self.log = log or (lambda m: print(f"rdmx: {m}", file=sys.stderr, flush=True))
        self.groups: dict[str, Any] = {g: None for g in GROUPS}
        if dist.world > 1:  # DCP's coordination, apart from training's: a gloo group per DCP folder, as
            import torch.distributed as tdist  # the two saves run in threads of their own at the same time

            self.groups = {g: tdist.new_group(backend="gloo") for g in GROUPS}
        self.group = self.groups["model"]  # the small collectives of a save (RNG states, the seal)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdmx-checkpoint")
        self.pending = None  # (step, future) of the save in flight
        self.last: dict[str, Any] = {}  # figures of the last save (benchmarks): blocked_s, bytes, ...

    # -- saving -----------------------------------------------------------------------------
    def save(self, step: int, state: dict[str, Any], small: dict[str, Any], block: bool = False,
             folder: Path | None = None) -> Path:
        """Checkpoint ``state`` (DCP state-dict entries: this rank's shards of ``generator``,
        ``optimizer``, ``ema``) and ``small`` (rank 0's small state; every rank's RNG is added
        here) as ``root/step-NNNNNN`` (or ``folder``, outside the retention of ``root``)."""
        import torch.distributed as tdist
        import torch.distributed.checkpoint as dcp

        t0 = time.perf_counter()
        self.wait()
        folder = Path(folder) if folder is not None else folder_for(self.root, step)
        main = self.dist.main
        need_disk(folder.parent, tensor_bytes(state) + tensor_bytes(small), f"the checkpoint of step {step} "
                  f"(this rank's shards)")
        if main:
            if folder.exists():  # a save of this step cut short, or a run started over: never sealed here
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        rngs = [rng]
        if self.group is not None:
            rngs = [None] * self.dist.world
            tdist.all_gather_object(rngs, rng, group=self.group)  # also: rank 0's folder exists now
        futures = []
        for group, part in split_groups(state).items():
            if part:
                writer = dcp.FileSystemWriter(str(folder / group), single_file_per_rank=True, sync_files=True,
                                              overwrite=True)
                futures.append(dcp.async_save(part, storage_writer=writer, process_group=self.groups[group],
                                              no_dist=self.group is None))
        if main:
            small = {**small, "format": FORMAT, "step": int(step), "world_size": self.dist.world, "rng": rngs}
            save_torch(folder / SMALL, small)
        self.pending = (step, self.executor.submit(self._seal, futures, folder, step, small if main else None,
                                                   sorted(state)))
        self.last = {"blocked_s": time.perf_counter() - t0, "step": step}
        if block:
            self.wait()
        return folder

    def _seal(self, futures, folder: Path, step: int, small: dict[str, Any] | None, keys: list[str]) -> dict[str, Any]:
        """Background: wait for DCP, hash this rank's files, and (rank 0) write the manifest."""
        import torch.distributed as tdist

        t0 = time.perf_counter()
        error = None
        mine: dict[str, dict[str, Any]] = {}
        try:
            for future in futures:
                future.result()
            for p in sorted(folder.glob(f"*/__{self.dist.rank}_*.distcp")):
                mine[f"{p.parent.name}/{p.name}"] = _file_info(p)
        except Exception as exc:  # noqa: BLE001 - reported by wait(), on every rank alike
            error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        parts = [(mine, error)]
        if self.group is not None:
            parts = [None] * self.dist.world if self.dist.main else None
            tdist.gather_object((mine, error), parts, dst=0, group=self.group)
            if not self.dist.main:
                return {"step": step}
        errors = [e for _, e in parts if e]
        if errors:
            raise RuntimeError(errors[0])
        files: dict[str, Any] = {}
        for share, _ in parts:
            files.update(share)
        for name in [f"{g}/.metadata" for g in GROUPS if (folder / g).is_dir()] + [SMALL]:
            files[name] = _file_info(folder / name)
        write_sealed_json(folder / MANIFEST, {
            "format": FORMAT, "step": int(step), "fingerprint": small.get("fingerprint"),
            "world_size": self.dist.world, "sharded": bool(small.get("sharded")), "keys": keys, "files": files,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        size = sum(f["bytes"] for f in files.values())
        changed = self._retain()
        held = [f for _, f, ok in scan(self.root) if ok]
        total = sum(_folder_bytes(f) for f in held)
        note = f"; {', '.join(changed)}" if changed else ""
        self.log(f"checkpoint {folder.name} sealed ({human_size(size)}, written in the background in "
                 f"{time.perf_counter() - t0:.1f} s); {self.root} holds {len(held)} ({human_size(total)}){note}")
        return {"step": step, "bytes": size, "seal_s": time.perf_counter() - t0}

    def _retain(self) -> list[str]:
        """Retention after a seal (never touching the newest): checkpoints neither among the newest
        ``keep_last`` nor milestones are removed; a milestone that left the rolling window keeps its
        weights only unless ``milestones = "full"``. Returns what changed, for the log line."""
        sealed = [(s, f) for s, f, ok in scan(self.root) if ok]
        rolling = keep([s for s, _ in sealed], self.keep_last, 0)
        kept = keep([s for s, _ in sealed], self.keep_last, self.keep_every)
        changed = []
        for s, f in sealed[:-1]:
            if s not in kept:
                (f / MANIFEST).unlink()  # unsealed first: a removal cut short leaves no half checkpoint
                shutil.rmtree(f, ignore_errors=True)
                changed.append(f"removed {f.name}")
            elif s not in rolling and self.milestones == "weights" and (f / "optim").is_dir():
                prune_optimizer(f)
                changed.append(f"{f.name} kept as a milestone (weights)")
        return changed

    # -- waiting ----------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> None:
        """Block until the save in flight is sealed; its failure is raised here as one message."""
        if self.pending is None:
            return
        step, future = self.pending
        try:
            result = future.result(timeout=timeout)
        except FutureTimeout:
            self.log(f"the checkpoint of step {step} was still being written after {timeout:.0f} s; not waiting")
            return
        except Exception as exc:  # noqa: BLE001
            self.pending = None
            why = "the disk is full there" if disk_full(exc) else str(exc)
            raise RdmxError(f"the checkpoint of step {step} could not be written in {self.root} ({why}); the previous "
                            f"checkpoint is intact") from None
        self.pending = None
        self.last.update(result)

    def close(self, timeout: float | None = None) -> None:
        try:
            self.wait(timeout)
        finally:
            self.executor.shutdown(wait=timeout is None)


def _file_info(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except FileNotFoundError:
        return 0


def prune_optimizer(folder: Path) -> None:
    """A sealed checkpoint keeps its weights only: the manifest is rewritten first (sealed, without
    the optimiser's files), then ``optim/`` goes; a cut-short prune leaves a valid checkpoint."""
    manifest = read_manifest(folder)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("optim/")}
    manifest["keys"] = [k for k in manifest["keys"] if k != "optimizer"]
    manifest["pruned"] = True
    write_sealed_json(folder / MANIFEST, manifest)
    shutil.rmtree(folder / "optim", ignore_errors=True)
