"""``run.log``: a run folder tells its own story (on a cluster the console is a scheduler's file
somewhere else).

While a run works in its folder, what rdmx prints is also appended to the folder's log, each line
with a UTC timestamp: rank 0's console (stdout and stderr) to ``run.log``, another rank's
stderr (its warnings and errors) to ``run.rank<r>.log``, made only when that rank has something
to say. A progress bar's redraws are left out (its last state is kept). Every session of the run
starts with a marker line (new run, or resumed from step k) and ends with one (finished, stopped,
failed); the full traceback of an error goes to the log while the console keeps its one-line
message.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from rdmx import __version__

LOG = "run.log"


def log_name(rank: int) -> str:
    return LOG if rank == 0 else f"run.rank{rank}.log"


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Sink:
    """Complete lines, timestamped, appended to one file (opened on the first line)."""

    def __init__(self, path: Path, header: str = ""):
        self.path = path
        self.header = header
        self.file = None
        self.partial = ""
        self.lock = threading.Lock()

    def _write_line(self, line: str) -> None:
        if self.file is None:
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run
            if self.header:
                self.file.write(f"{_stamp()} {self.header}\n")
        self.file.write(f"{_stamp()} {line}\n")
        self.file.flush()

    def feed(self, text: str) -> None:
        with self.lock:
            text = self.partial + text
            *lines, self.partial = text.split("\n")
            for line in lines:
                line = line.rsplit("\r", 1)[-1]  # a progress bar's redraws: its last state only
                if line.strip():
                    self._write_line(line.rstrip())
            self.partial = self.partial.rsplit("\r", 1)[-1] if "\r" in self.partial else self.partial

    def line(self, text: str) -> None:
        with self.lock:
            for part in text.rstrip("\n").split("\n"):
                self._write_line(part)

    def close(self) -> None:
        with self.lock:
            if self.partial.strip():
                self._write_line(self.partial.rstrip())
            self.partial = ""
            if self.file is not None:
                self.file.close()
                self.file = None


class _Tee:
    """A text stream that writes through to ``stream`` and feeds ``sink``."""

    def __init__(self, stream, sink: _Sink):
        self._stream, self._sink = stream, sink

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        try:
            self._sink.feed(text)
        except OSError:
            pass  # a full disk must not stop the console (the run reports disk problems itself)
        return n

    def __getattr__(self, name):  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


class RunLog:
    """The run log of ``out`` for this rank while the ``with`` block runs."""

    def __init__(self, out: str | Path, rank: int = 0):
        self.path = Path(out) / log_name(rank)
        self.rank = rank
        self.sink: _Sink | None = None
        self._saved: tuple | None = None
        self.outcome = "ended"

    def __enter__(self) -> RunLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():
            from rdmx.errors import RdmxError

            raise RdmxError(f"{self.path} is a symbolic link; rdmx writes its run log only to a file of its own: "
                            f"remove the link")
        self.sink = _Sink(self.path, header=f"---- rank {self.rank} (pid {os.getpid()}) ----" if self.rank else "")
        self._saved = (sys.stdout, sys.stderr)
        if self.rank == 0:
            sys.stdout = _Tee(sys.stdout, self.sink)
        sys.stderr = _Tee(sys.stderr, self.sink)
        return self

    def started(self, resumed_from: int | None) -> None:
        """The session's first line (rank 0): a new run, or a resumed one."""
        if self.rank != 0 or self.sink is None:
            return
        what = f"resumed from step {resumed_from}" if resumed_from is not None else "started"
        world = os.environ.get("WORLD_SIZE", "1")
        self.sink.line(f"==== rdmx {__version__}: run {what} (host {socket.gethostname()}, pid {os.getpid()}, "
                       f"{world} process(es)) ====")

    def exception(self, exc: BaseException) -> None:
        """The full traceback of ``exc`` (the console shows its one-line message)."""
        if self.sink is not None:
            self.sink.line("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self.sink is None:
            return
        from rdmx.train.stop import RunStopped

        if exc is None:
            outcome = "finished"
        elif isinstance(exc, RunStopped):
            outcome = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            outcome = "interrupted"
        else:
            outcome = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        if self.rank == 0 or exc is not None:
            self.sink.line(f"==== run {outcome} ====")
        self.sink.close()
