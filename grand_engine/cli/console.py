"""What a run shows on the console, and where everything else goes.

:func:`run_console` sets a run command up (``run``, ``rerun``, ``demo``): the console keeps grand-engine's own
lines (the plan, the live progress display, warnings, the summary) while Ray's and the libraries' output (log
records, prints, worker output, native libraries writing to file descriptors 1 and 2) goes to the run's log file,
``OUT/_logs/<run time>.log``. ``-v`` lets that output through to the console instead (the log file then holds the
log records only); ``-q`` prints only the summary. Warnings of grand-engine's loggers in Ray workers reach the
console once each (their lines carry a mark the driver looks for).

:class:`ConsoleReport` is the run's observer: the plan line before the work, the live display during it
(:class:`~grand_engine.progress.StageBoard`) and the summary table after it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from grand_engine.cli import configure_logging, show_on_console
from grand_engine.io.store import OutputStore
from grand_engine.progress import StageBoard
from grand_engine.runtime.plan import Plan
from grand_engine.runtime.ray_backend import WORKER_LOG_MARK, worker_log_record
from grand_engine.runtime.run import ProgressObserver, RunSummary

LOGS = "_logs"
"""The folder of an output that holds one log file per run."""


class ConsoleStream(io.TextIOBase):
    """The console's stderr as the logging handler sees it: while a live display is on screen, each line is
    written above it (the display is redrawn below) instead of through it."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.board: StageBoard | None = None
        self._partial = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def write(self, text: str) -> int:
        board = self.board
        if board is None or board.mode != "live" or board.closed:
            self.stream.write(text)
            return len(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            board.write(line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogRouter(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` during a run: text goes to the log file; a line a Ray worker's grand-engine
    logger wrote is logged again on the driver, so that its warnings reach the console."""

    def __init__(self, log: TextIO) -> None:
        super().__init__()
        self.log = log
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            _relog_worker_line(line)
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def _relog_worker_line(line: str) -> None:
    if WORKER_LOG_MARK not in line:  # the cheap test first: most lines are not a worker's log record
        return
    record = worker_log_record(line)
    if record is not None and record.levelno >= logging.WARNING:
        record.grand_engine_relogged = True  # its line is in the log file already
        for handler in logging.getLogger("grand_engine").handlers:
            if getattr(handler, "grand_engine_console", False) and record.levelno >= handler.level:
                handler.handle(record)


@dataclass
class Console:
    """Where a run command writes: ``stdout`` (the plan, the summary), ``stderr`` (progress, warnings), the log
    file, and whether to be quiet, verbose or show progress."""

    stdout: TextIO
    stderr: ConsoleStream
    log_path: str | None = None
    quiet: bool = False
    verbosity: int = 0
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        """A line of the command's own (not the summary): left out with ``--quiet``."""
        if not self.quiet:
            print(text, file=self.stdout, flush=True)

    def summary(self, text: str) -> None:
        """A line of the summary (always printed)."""
        print(text, file=self.stdout, flush=True)

    def report(self) -> ConsoleReport:
        return ConsoleReport(self)


class ConsoleReport(ProgressObserver):
    """Prints the plan line before the work, shows the live display during it and the summary table after it."""

    def __init__(self, console: Console) -> None:
        if console.quiet or not console.progress:
            mode = "off"
        elif console.verbosity:
            mode = "lines"  # Ray's and the libraries' output shares the console: no redrawing in place
        else:
            mode = "auto"
        super().__init__(StageBoard(console.stderr.stream, mode=mode))
        self.console = console
        console.stderr.board = self.board

    def planned(self, plan: Plan, invalidated: list[tuple[str, str]]) -> None:
        show_on_console(*stage_loggers(plan.pipeline.stages.values()))  # a plugin stage's warnings matter too
        if invalidated:
            stages = sorted({stage for stage, _ in invalidated})
            self.console.say(f"invalidated {len(invalidated)} (stage, unit) records of {', '.join(stages)}")
        self.console.say(
            f"{len(plan.units)} units from {len(plan.shards)} shard(s); {plan.pairs_todo()} (stage, unit) tasks to "
            f"run over {len(plan.pipeline.order)} stages"
        )
        super().planned(plan, invalidated)

    def finished(self, summary: RunSummary) -> None:
        super().finished(summary)
        self.console.stderr.board = None
        self.console.summary(summary.table())

    def stopped(self, error: BaseException) -> None:
        super().stopped(error)
        self.console.stderr.board = None


def stage_loggers(stages) -> list[str]:
    """The names of the loggers of the stages' modules (``logging.getLogger(__name__)`` in a stage's module)."""
    return sorted({type(stage).__module__ for stage in stages})


def locations(out: str, summary: RunSummary | None, log_path: str | None, explorer: str | None) -> list[str]:
    """The summary's last lines: where the outputs, the error rows, the log and the explorer are."""
    errors = summary.error_rows if summary is not None else 0
    lines = [
        f"outputs:  {out}   (grand-engine status {out})",
        f"errors:   {errors} error rows in {_join(out, '_errors')}   (grand-engine errors {out})",
    ]
    if log_path:
        lines.append(f"log:      {log_path}")
    if explorer:
        lines.append(f"explorer: {explorer}")
    else:
        lines.append(f"explorer: grand-engine show {out} --html {out.rstrip('/')}_explorer")
    return lines


def _join(out: str, rel: str) -> str:
    return f"{out.rstrip('/')}/{rel}"


def log_file_name() -> str:
    """``<run time>.log`` in UTC, like ``_runs/<run time>.json`` (``2026-01-31T120501Z.log``)."""
    return time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime()) + ".log"


def _console_stream(stream: TextIO, fd: int) -> tuple[TextIO, bool]:
    """A stream to the console that survives redirecting ``fd``: a copy of the descriptor when ``stream`` writes to
    it, else ``stream`` itself (a test's capture buffer). The flag says whether the copy must be closed."""
    try:
        if stream.fileno() == fd:
            encoding = getattr(stream, "encoding", None) or "utf-8"
            return os.fdopen(os.dup(fd), "w", buffering=1, encoding=encoding, errors="backslashreplace"), True
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    return stream, False


@contextlib.contextmanager
def run_console(out: str, verbosity: int = 0, quiet: bool = False, progress: bool = True) -> Iterator[Console]:
    """Set the console up for a run writing to ``out`` (see the module docstring); everything is put back on exit.

    A local output gets its log at ``OUT/_logs/<run time>.log`` as the run goes; for an object-store output the log
    is written to a local temporary file and copied there at the end.
    """
    store = OutputStore(out)
    store.check_writable()  # before the log folder: an unwritable output gets the store's clear message
    name = log_file_name()
    if store.is_local:
        folder = Path(store.full(LOGS))
        folder.mkdir(parents=True, exist_ok=True)
        local_log, shown_log = folder / name, str(folder / name)
    else:
        local_log = Path(tempfile.mkdtemp(prefix="grand-engine-log-")) / name
        shown_log = _join(store.uri, f"{LOGS}/{name}")
    sys.stdout.flush()
    sys.stderr.flush()
    stdout, close_out = _console_stream(sys.stdout, 1)
    stderr_raw, close_err = _console_stream(sys.stderr, 2)
    stderr = ConsoleStream(stderr_raw)
    console = Console(stdout, stderr, shown_log, quiet=quiet, verbosity=verbosity, progress=progress)
    log = open(local_log, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    configure_logging(verbosity, quiet=quiet, log_file=local_log, console=stderr)
    capture = verbosity == 0
    saved_fds: list[int] = []
    saved_streams = (sys.stdout, sys.stderr)
    if capture:
        saved_fds = [os.dup(1), os.dup(2)]
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = _LogRouter(log)
    try:
        yield console
    except BaseException:
        log.write("the command stopped with an error:\n" + traceback.format_exc())
        raise
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        if capture:
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((1, 2), saved_fds, strict=True):
                os.dup2(saved, fd)
                os.close(saved)
        configure_logging(verbosity, quiet=quiet)
        log.close()
        for stream, close in ((stdout, close_out), (stderr_raw, close_err)):
            if close:
                stream.close()
        if not store.is_local:
            with contextlib.suppress(OSError):
                store.write_bytes(f"{LOGS}/{name}", local_log.read_bytes())
