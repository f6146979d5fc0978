"""Runs and sweep cells sent to a scheduler through submitit: SLURM (a sweep is one job array) or
submitit's local executor (cells in parallel on this machine; what the tests use).

``rdmx run RECIPE --submit slurm --slurm partition=gpu --slurm gpus_per_node=8 --slurm tasks_per_node=8``
submits; ``--submit local --jobs 2`` runs two cells at a time here. Each job runs one run in its
own folder (``cell-NNN`` of the sweep, or the run's ``--out``) from the resolved recipe written
there, so the job and a later ``rdmx run`` agree on the fingerprint.

Preemption: submitit sends its signal (SIGUSR2) before a SLURM job is preempted or times out;
rdmx stops on it like on any stop signal (a sealed checkpoint at the next step boundary), then
hands over to submitit, which requeues the job (:meth:`RunJob.checkpoint`); the requeued job
resumes from the checkpoint and continues the same tracking run. A job with several tasks
(``tasks_per_node``) is a torch.distributed job: each task is a rank.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError

PREEMPT_SIGNAL = "SIGUSR2"  # submitit's preemption / time-out signal (SUBMITIT_PREEMPT_SIGNAL)
KINDS = ("local", "slurm")
GENERIC = {"timeout_min", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb", "name",
           "stderr_to_stdout"}  # submitit's cluster-independent parameters; the rest are SLURM's own


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["partition=gpu", "gpus_per_node=8"]`` -> ``{"partition": "gpu", "gpus_per_node": 8}``."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RdmxError(f"--slurm {item!r}: expected key=value (e.g. --slurm partition=gpu)")
        v: Any = value.strip()
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        params[key.strip().replace("-", "_")] = v
    return params


class RunJob:
    """One run inside a scheduler's job (picklable; submitit calls it, and :meth:`checkpoint` when
    the job is preempted or times out)."""

    def __init__(self, recipe: str, out: str, parent_run_id: str | None = None, threads: int | None = None):
        self.recipe, self.out, self.parent_run_id, self.threads = recipe, out, parent_run_id, threads

    def __call__(self) -> dict[str, Any]:
        import submitit

        from rdmx.recipe import load_recipe
        from rdmx.run import run_one
        from rdmx.track.base import NullTracker, make_tracker
        from rdmx.track.safe import SafeTracker
        from rdmx.train.distributed import from_environment, shutdown
        from rdmx.train.stop import RunStopped

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one task per rank: the variables torchrun would set
            submitit.helpers.TorchDistributedEnvironment().export()
            os.environ.setdefault("LOCAL_WORLD_SIZE", str(env.num_tasks // env.num_nodes))
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        resolved = load_recipe(self.recipe)
        signals = list(resolved.recipe.train.stop_signals)
        if PREEMPT_SIGNAL not in signals:  # not in the fingerprint: the same run
            import json

            from rdmx.recipe import with_overrides

            resolved = with_overrides(resolved, [f"train.stop_signals={json.dumps([*signals, PREEMPT_SIGNAL])}"])
        main = from_environment().main
        tracker = SafeTracker(make_tracker(resolved) if main else NullTracker())
        try:
            return run_one(resolved, Path(self.out), tracker, progress=False, parent_run_id=self.parent_run_id)
        except RunStopped:
            self._requeue()
            raise
        finally:
            shutdown()

    @staticmethod
    def _requeue() -> None:
        """After rdmx's own stop (checkpoint sealed): submitit's handler, restored by now, calls
        :meth:`checkpoint` and requeues the job (rank 0; it exits the process)."""
        handler = signal.getsignal(getattr(signal, PREEMPT_SIGNAL))
        if callable(handler) and getattr(handler, "__name__", "") == "checkpoint_and_try_requeue":
            handler(int(getattr(signal, PREEMPT_SIGNAL)), None)

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on preemption: run the same job again (it resumes from its checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(self.recipe, self.out, self.parent_run_id, self.threads))


class Submission:
    """Where ``rdmx run --submit`` sends its runs: ``kind`` (local or slurm), at most ``jobs`` at a
    time, submitit ``params`` (SLURM's: partition, account, qos, ...), and whether to wait."""

    def __init__(self, kind: str, jobs: int = 1, params: dict[str, Any] | None = None, wait: bool = True):
        if kind not in KINDS:
            raise RdmxError(f"--submit must be one of {', '.join(KINDS)}, got {kind!r}")
        if jobs < 1:
            raise RdmxError(f"--jobs must be at least 1, got {jobs}")
        self.kind, self.jobs, self.params, self.wait = kind, jobs, dict(params or {}), wait
        if kind == "local" and not wait:
            raise RdmxError("--submit local runs the jobs on this machine: it waits for them (drop --no-wait)")

    def executor(self, folder: Path):
        import submitit

        folder.mkdir(parents=True, exist_ok=True)
        params = dict(self.params)
        params.setdefault("timeout_min", 7 * 24 * 60)
        if self.kind == "local":
            ex = submitit.LocalExecutor(folder=str(folder))
            unknown = sorted(set(params) - GENERIC - {"signal_delay_s", "visible_gpus"})
            if unknown:
                raise RdmxError(f"--submit local takes {', '.join(sorted(GENERIC))}; not: {', '.join(unknown)}")
            ex.update_parameters(**params)
            return ex
        try:
            ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        except RuntimeError as exc:  # submitit looks for srun
            raise RdmxError(f"--submit slurm: SLURM is not reachable from here ({exc}); submit from a login node, "
                            "or use --submit local") from None
        named = {k if k in GENERIC or k.startswith("slurm_") else f"slurm_{k}": v for k, v in params.items()}
        named.setdefault("slurm_array_parallelism", self.jobs)
        try:
            ex.update_parameters(**named)
        except (ValueError, TypeError) as exc:
            raise RdmxError(f"--slurm: {exc}") from None
        return ex

    def run(self, runs: list[tuple[str, Any, Path]], parent_run_id: str | None, folder: Path) -> list[dict] | None:
        """Submit ``(label, resolved, out)`` runs (a sweep's cells: one job array); returns their
        summaries when waiting, else None after writing ``folder/jobs.json``."""
        from rdmx.files import write_json
        from rdmx.run import RESOLVED_RECIPE, write_resolved_recipe

        ex = self.executor(folder / "submitit")
        threads = max(1, (os.cpu_count() or 1) // self.jobs) if self.kind == "local" else None
        calls = []
        for _, resolved, out in runs:
            out.mkdir(parents=True, exist_ok=True)
            write_resolved_recipe(resolved, out / RESOLVED_RECIPE)
            calls.append(RunJob(str(out / RESOLVED_RECIPE), str(out), parent_run_id, threads))
        if self.kind == "slurm":
            try:
                with ex.batch():  # one job array
                    jobs = [ex.submit(call) for call in calls]
            except Exception as exc:  # noqa: BLE001 - sbatch missing or refusing: one line
                raise RdmxError(f"submitting to SLURM failed: {type(exc).__name__}: {str(exc).strip()[:500]}") from None
        else:
            jobs = self._local(ex, calls)
        record = [{"label": label, "out": str(out), "job_id": job.job_id} for (label, _, out), job in zip(runs, jobs)]
        write_json(folder / "jobs.json", {"kind": self.kind, "jobs": record})
        if not self.wait:
            return None
        return [self._result(job, out) for job, (_, _, out) in zip(jobs, runs)]

    def _local(self, ex, calls):
        """At most ``jobs`` local jobs at a time; returns them all, finished."""
        jobs, running = [], []
        for call in calls:
            while len(running) >= self.jobs:
                running = [j for j in running if not j.done()]
                time.sleep(0.2)
            job = ex.submit(call)
            jobs.append(job)
            running.append(job)
        return jobs

    @staticmethod
    def _result(job, out: Path) -> dict[str, Any]:
        try:
            return job.result()
        except Exception as exc:  # noqa: BLE001 - the job's own error, with where its logs are
            last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or [type(exc).__name__]
            raise RdmxError(f"the job of {out} failed ({last[0][:300]}); its log: {job.paths.stderr}") from None
