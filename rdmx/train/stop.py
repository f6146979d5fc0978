"""Preemption: a scheduler's signal becomes a stop that every rank takes at the same step boundary.

While a run trains, SIGTERM, SIGINT and SIGUSR1 (``train.stop_signals``; SLURM sends SIGUSR1
before it preempts a job when asked with ``--signal``) only set a flag. After each step the ranks
agree (:func:`agree`: one all-reduce of two integers, the stop flag and "a checkpoint is due"),
so all of them stop after the same step, write a sealed checkpoint, mark the tracking run as
interrupted and end with :data:`EXIT_STOPPED`. Running the same command again resumes.

* A second signal exits at once, with the signal's own status (143 for SIGTERM, 130 for SIGINT):
  a save in flight is left unsealed (ignored and cleaned at the next start) and the last sealed
  checkpoint is untouched. The same signal again within :data:`REPEAT_S` is one request, not two:
  a scheduler and a launcher (SLURM and torchrun) may both deliver it.
* Outside the step loop (set-up, the reference build, the final evaluation) the first signal
  stops at once (:class:`RunStopped`): the caches written so far are whole files, and no step is
  lost, since the checkpoint of the last step is written before the final evaluation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable

EXIT_STOPPED = 75  # EX_TEMPFAIL (sysexits.h): stopped on request after a checkpoint; run it again to resume
DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
REPEAT_S = 1.0  # the same signal delivered twice within this many seconds counts once


class RunStopped(Exception):
    """The run stopped on a signal; ``checkpoint`` is the sealed checkpoint it wrote (None when it
    stopped before the first step or outside the step loop)."""

    def __init__(self, signal_name: str, step: int | None = None, checkpoint=None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f" after step {step}" if step is not None else ""
        saved = f"; checkpoint sealed: {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"stopped by {signal_name}{where}{saved}")


def signal_number(name: str) -> int:
    """``"SIGTERM"`` (or ``"TERM"``) -> its number; an unknown name is a ValueError naming it."""
    key = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
    sig = getattr(signal, key, None)
    if not isinstance(sig, signal.Signals) or key in ("SIGKILL", "SIGSTOP"):
        raise ValueError(f"{name!r} is not a signal a run can catch (e.g. SIGTERM, SIGINT, SIGUSR1, SIGUSR2)")
    return int(sig)


class StopRequest:
    """The run's signal handlers, installed for the ``with`` block (main thread only; elsewhere,
    e.g. a test calling the trainer from a thread, nothing is installed)."""

    def __init__(self, names: Iterable[str] = DEFAULT_SIGNALS, rank: int = 0):
        self.numbers = [signal_number(n) for n in names]
        self.who = "rdmx" if rank == 0 else f"rdmx[rank {rank}]"
        self.received: str | None = None
        self._at = 0.0  # when the first signal came (time.monotonic)
        self.deferred = False  # True inside the step loop: the stop waits for the step boundary
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for num in self.numbers:
                self._previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for num, handler in self._previous.items():
            signal.signal(num, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == name and time.monotonic() - self._at < REPEAT_S:
            return  # one request delivered twice (e.g. by SLURM to every process and forwarded by torchrun)
        if self.received is not None:  # the second signal: at once, the default way
            self.log(f"{name} again: exiting at once; the last sealed checkpoint is untouched")
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = name
        self._at = time.monotonic()
        if not self.deferred:
            raise RunStopped(name)
        self.log(f"{name} received: stopping after this step with a checkpoint (a second signal exits at once)")

    @property
    def number(self) -> int:
        """The received signal's number (0: none), as the ranks agree on it."""
        return int(signal_number(self.received)) if self.received else 0

    def log(self, message: str) -> None:
        """A line on this rank's stderr (every rank: it goes to its own log, rdmx.runlog)."""
        print(f"{self.who}: {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def at_step_boundaries(self):
        """Inside: a signal waits for the end of the step (the loop calls :func:`agree`)."""
        self.deferred = True
        try:
            yield
        finally:
            self.deferred = False


def signal_name(number: int) -> str:
    return signal.Signals(number).name


def agree(flags: list[int], dist, device) -> list[int]:
    """The element-wise maximum of ``flags`` over all ranks (one all-reduce; as is in one process)."""
    if dist.world == 1:
        return list(flags)
    import torch
    import torch.distributed as tdist

    t = torch.tensor(flags, dtype=torch.int64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]
