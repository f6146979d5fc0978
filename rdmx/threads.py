"""One CPU thread policy per process, decided in one place before torch starts its thread pool.

The intra-op threads of an rdmx process are the CPUs it may use (its affinity mask, capped by a
cgroup CPU quota; not ``os.cpu_count()``) divided by the processes of the job sharing them (the
local world size under torchrun, the xdist workers of a test suite); inter-op threads likewise.
OpenMP threads wait for work passively (``OMP_WAIT_POLICY=PASSIVE``): torch's default spinning
makes a pool slow down tenfold as soon as one of its threads is descheduled by a process rdmx does
not know about (measured in ``benchmarks/contention.py``). DataLoader workers and reference-
extraction workers run with one thread each (:func:`worker_init`).

The user's own settings always win: ``OMP_NUM_THREADS`` (a value that is not a positive integer
is warned about and replaced), ``OMP_WAIT_POLICY``, ``rdmx --threads N`` / ``RDMX_THREADS`` (0, a
negative number or more than the CPUs available is an error naming the setting), and
``RDMX_THREAD_POLICY=off`` leaves everything to torch. Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

_DECIDED: Policy | None = None


@dataclass(frozen=True)
class Policy:
    threads: int
    interop: int
    cpus: int
    sharing: int  # processes sharing the CPUs
    source: str  # where the thread count comes from
    wait: str  # the OpenMP wait policy in force
    applied: bool = True

    def describe(self) -> str:
        if not self.applied:
            return "CPU threads: torch's defaults (RDMX_THREAD_POLICY=off)"
        share = f"{self.cpus} CPU(s) / {self.sharing} process(es)" if self.source == "policy" else self.source
        return f"{self.threads} CPU thread(s) per process ({share}), OpenMP waits {self.wait.lower()}"


def cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if none."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


def sharing_processes(env=os.environ) -> int:
    """Processes of this job on the same CPUs: torchrun's local world size, xdist's workers."""
    for var in ("LOCAL_WORLD_SIZE", "PYTEST_XDIST_WORKER_COUNT"):
        try:
            n = int(env.get(var, ""))
        except ValueError:
            continue
        if n >= 1:
            return n
    return 1


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def decide(requested: str | int | None = None, env=os.environ) -> Policy:
    """The policy for this process (``requested``: the ``--threads`` option; else ``RDMX_THREADS``)."""
    from rdmx.errors import RdmxError

    cpus = available_cpus()
    sharing = sharing_processes(env)
    wait = env.get("OMP_WAIT_POLICY") or "PASSIVE"
    if env.get("RDMX_THREAD_POLICY", "").lower() == "off":
        return Policy(0, 0, cpus, sharing, "torch", env.get("OMP_WAIT_POLICY", "torch's default"), applied=False)
    where = "--threads"
    if requested is None and env.get("RDMX_THREADS"):
        requested, where = env["RDMX_THREADS"], "RDMX_THREADS"
    if requested is not None:
        try:
            n = int(str(requested))
        except ValueError:
            raise RdmxError(f"{where} must be a whole number of threads, got {requested!r}") from None
        if not 1 <= n <= cpus:
            raise RdmxError(f"{where} = {n}: give 1 to {cpus} (the CPUs this process may use)")
        return Policy(n, min(n, 2), cpus, sharing, f"{where} = {n}", wait)
    omp = env.get("OMP_NUM_THREADS")
    if omp is not None:
        try:
            n = int(omp)
            if n < 1:
                raise ValueError
            return Policy(n, min(n, 2), cpus, sharing, f"OMP_NUM_THREADS = {n}", wait)
        except ValueError:
            fallback = max(1, cpus // sharing)
            _warn(f"OMP_NUM_THREADS = {omp!r} is not a positive whole number; rdmx uses {fallback} thread(s)")
            return Policy(fallback, min(fallback, 2), cpus, sharing, "policy", wait)
    n = max(1, cpus // sharing)
    return Policy(n, min(n, 2), cpus, sharing, "policy", wait)


def apply(requested: str | int | None = None, env=os.environ) -> Policy:
    """Decide (once per process) and put the policy in force: the environment variables OpenMP and
    MKL read when torch starts its pool, and torch's setters when torch is already imported."""
    global _DECIDED
    if _DECIDED is not None and requested is None:
        return _DECIDED
    policy = decide(requested, env)
    if policy.applied:
        env["OMP_NUM_THREADS"] = str(policy.threads)
        env.setdefault("MKL_NUM_THREADS", str(policy.threads))
        env.setdefault("OMP_WAIT_POLICY", policy.wait)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(policy.threads)
            try:
                torch.set_num_interop_threads(policy.interop)
            except RuntimeError:
                pass  # the inter-op pool has started already: it keeps its width
    _DECIDED = policy
    return policy


def decided() -> Policy | None:
    return _DECIDED


_ANNOUNCED = False


def announce() -> None:
    """Say the policy once per process (rank 0), where the work starts: a run (into its log), the
    components of eval / sample / export / a reference build."""
    global _ANNOUNCED
    if _ANNOUNCED or os.environ.get("RANK", "0") != "0":
        return
    _ANNOUNCED = True
    print(f"rdmx: {apply().describe()}", file=sys.stderr, flush=True)


def worker_init(_worker_id: int = 0) -> None:
    """``worker_init_fn`` of DataLoaders: one thread per worker process."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
