"""The project's one progress display, written to the console's stderr.

Two displays share the same terminal handling:

* :class:`Progress`, a loop of known length (``export``, ``show``, ``verify``): a tqdm bar on a terminal;
* :class:`StageBoard`, a pipeline run: per stage, units done out of those planned, images/s, ETA, error rows and
  GPU memory, redrawn in place on a terminal.

When the stream is not a terminal (a log file, a CI job, a pipe) redrawing would write a carriage-return update per
step into the file, so both write one concise line per interval instead (for a run: one line per stage that moved or
is running)::

    export level4: 384/1000 images (38%), 41.2 images/s, 00:09 elapsed, ETA 00:14, records 384
    [02:10] dense_caption: 3/8 units (37%), 1 running, 384 images, 2.9 images/s, ETA 03:37, 4 error rows
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 10.0
"""Seconds between two progress lines of a loop when the stream is not a terminal."""
RUN_LINE_INTERVAL_S = 30.0
"""Seconds between two rounds of stage lines of a run when the stream is not a terminal (a run is long; a line
per stage every 10 s would bury the log)."""
REFRESH_S = 0.5
"""Seconds between two redraws of the live display on a terminal."""
GPU_PROBE_S = 5.0
"""Seconds between two ``nvidia-smi`` readings of the GPUs' memory."""
GIB = 1024**3


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or odd stream is not)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def format_interval(seconds: float) -> str:
    """``MM:SS`` (``H:MM:SS`` from an hour on)."""
    return tqdm.format_interval(max(0.0, seconds))


def format_rate(per_second: float) -> str:
    """``2.9 images/s``, or ``39.4 s/image`` below one image a second (an LLM stage on a CPU)."""
    if per_second >= 1 or per_second <= 0:
        return f"{per_second:.1f} images/s"
    return f"{1 / per_second:.1f} s/image"


class Progress:
    """``update()`` once per item of a loop of ``total`` items; ``close()`` (or ``with``) at the end.

    ``enabled=False`` (``--no-progress``) writes nothing. ``info`` passed to :meth:`update` (e.g. records
    written) is shown after the figures. ``stream`` and ``clock`` are stderr and :func:`time.monotonic` unless
    given (tests give a buffer and a fake clock).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.info: dict[str, Any] = {}
        self.mode = "off" if not enabled else ("bar" if is_terminal(self.stream) else "lines")
        # disable=False explicitly: a run sets TQDM_DISABLE to silence the libraries' own bars, not this one
        self.bar = (
            tqdm(total=total, desc=desc, unit=unit, file=self.stream, disable=False) if self.mode == "bar" else None
        )
        self.start = self.last_line = clock()
        self.closed = False

    def update(self, n: int = 1, **info: Any) -> None:
        """``n`` more items are done; ``info`` replaces the extra figures shown."""
        self.done += n
        self.info = info or self.info
        if self.bar is not None:
            if info:
                self.bar.set_postfix(info, refresh=False)
            self.bar.update(n)
        elif self.mode == "lines":
            now = self.clock()
            if now - self.last_line >= self.interval:
                self._write_line(now)

    def close(self) -> None:
        """End the display: close the bar, or write the last line."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines":
            self._write_line(self.clock())

    def line(self, now: float) -> str:
        """The progress line at time ``now``."""
        elapsed = max(0.0, now - self.start)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.done // self.total}%)" if self.total else ""
        parts = [
            f"{self.desc}: {self.done}/{self.total} {self.unit}s{pct}",
            f"{rate:.1f} {self.unit}s/s",
            f"{format_interval(elapsed)} elapsed",
        ]
        if rate > 0 and self.done < self.total:
            parts.append(f"ETA {format_interval((self.total - self.done) / rate)}")
        parts += [f"{k} {v}" for k, v in self.info.items()]
        return ", ".join(parts)

    def _write_line(self, now: float) -> None:
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()
        self.last_line = now

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- a pipeline run ------------------------------------------------------------------------------------


@dataclass
class StageProgress:
    """What the display knows of one stage: the units planned and, per unit, how it ended."""

    name: str
    units_total: int
    images_total: int
    running: dict[str, float] = field(default_factory=dict)  # unit -> when it started
    ended: dict[str, tuple[str, int, int, dict[str, int]]] = field(default_factory=dict)  # unit -> (status, …)
    done: int = 0
    failed: int = 0
    skipped: int = 0
    images: int = 0
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    gpu_bytes: int = 0  # the largest CUDA memory a worker process of the stage held
    first_start: float | None = None
    last_end: float | None = None
    changed: bool = False  # since the last line was written (lines mode)

    @property
    def finished(self) -> bool:
        return len(self.ended) >= self.units_total

    def end(self, unit_id: str, status: str, images: int, errors: int, error_types: dict[str, int]) -> None:
        """Record how ``unit_id`` ended; a second report of the same unit replaces the first."""
        old = self.ended.get(unit_id)
        if old is not None:
            self._count(*old, sign=-1)
        new = (status, images, errors, dict(error_types))
        self.ended[unit_id] = new
        self._count(*new, sign=1)
        self.running.pop(unit_id, None)
        self.changed = self.changed or new != old  # the same news again (its commit) is no news

    def _count(self, status: str, images: int, errors: int, types: dict[str, int], sign: int) -> None:
        if status == "done":
            self.done += sign
            self.images += sign * images
            self.errors += sign * errors
            for key, n in types.items():
                self.error_types[key] = self.error_types.get(key, 0) + sign * n
                if not self.error_types[key]:
                    del self.error_types[key]
        elif status == "failed":
            self.failed += sign
        else:
            self.skipped += sign

    def rate(self, now: float) -> float:
        """Images per second since the stage began (up to its last unit once it has finished)."""
        if self.first_start is None:
            return 0.0
        end = self.last_end if self.finished and self.last_end is not None else now
        return self.images / (end - self.first_start) if end > self.first_start else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace so far; None before the first unit ends or once the stage has finished."""
        ended = len(self.ended)
        if self.finished or not ended or self.first_start is None:
            return None
        return (now - self.first_start) / ended * (self.units_total - ended)

    def line(self, now: float) -> str:
        """``name: 3/8 units (37%), 1 running (00:41), 384 images, 2.9 images/s, ETA 03:37, 4 error rows (…)``;
        the running part says for how long the oldest running unit has run."""
        ended = len(self.ended)
        pct = f" ({100 * ended // self.units_total}%)" if self.units_total else ""
        parts = [f"{self.name}: {ended}/{self.units_total} units{pct}"]
        if self.running:
            parts.append(f"{len(self.running)} running ({format_interval(now - min(self.running.values()))})")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.images:
            parts.append(f"{self.images} images, {format_rate(self.rate(now))}")
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {format_interval(eta)}")
        if self.errors:
            types = ", ".join(f"{k} {v}" for k, v in sorted(self.error_types.items()))
            rows = f"{self.errors} error row{'' if self.errors == 1 else 's'}"
            parts.append(f"{rows} ({types})" if types else rows)
        if self.gpu_bytes:
            parts.append(f"GPU {self.gpu_bytes / GIB:.1f} GiB")
        return ", ".join(parts)


class GpuMemoryProbe:
    """The used/total memory of this machine's GPUs from ``nvidia-smi`` (read at most every ``every`` seconds);
    an empty string where there is no NVIDIA GPU."""

    def __init__(self, every: float = GPU_PROBE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.binary = shutil.which("nvidia-smi")
        self.text = ""
        self.read_at: float | None = None

    def __call__(self) -> str:
        if self.binary is None:
            return ""
        now = self.clock()
        if self.read_at is None or now - self.read_at >= self.every:
            self.read_at = now
            self.text = self._read()
        return self.text

    def _read(self) -> str:
        try:
            out = subprocess.run(
                [self.binary, "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            self.binary = None  # a broken driver: stop asking
            return ""
        return format_gpu_memory([tuple(float(v) for v in line.split(",")) for line in out.splitlines() if line])


def format_gpu_memory(gpus: list[tuple[float, ...]]) -> str:
    """``GPU mem 12.1/79.6 GiB`` for one GPU, ``GPU mem 3.0+0.5/79.6 GiB each`` for several (values in MiB)."""
    if not gpus:
        return ""
    used = "+".join(f"{u / 1024:.1f}" for u, _ in gpus)
    totals = {round(t / 1024, 1) for _, t in gpus}
    total = "/".join(f"{t:.1f}" for t in sorted(totals))
    return f"GPU mem {used}/{total} GiB" + (" each" if len(gpus) > 1 else "")


class StageBoard:
    """The live display of a pipeline run, fed with plain values (so any backend, and tests, can drive it).

    ``start`` gives the stages with the units and images planned for each; ``started``/``ended`` report a
    (stage, unit) as it begins and ends (a unit reported twice, e.g. by a retried worker and again when its record is
    committed, counts once); ``close`` ends the display. Modes: ``live`` (a terminal: the block is redrawn in
    place every :data:`REFRESH_S`), ``lines`` (one line per stage that moved or is running, every ``interval``),
    ``off``; ``auto`` picks ``live`` or ``lines`` from the stream. A background thread redraws while nothing is
    reported (``ticker=False`` leaves that to the caller's :meth:`tick`, as the tests do). Safe to call from
    several threads.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        mode: str = "auto",
        interval: float = RUN_LINE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        gpu_probe: Callable[[], str] | None = None,
        ticker: bool = True,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            mode = "live" if is_terminal(self.stream) else "lines"
        if mode not in ("live", "lines", "off"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.interval = interval
        self.clock = clock
        self.gpu_probe = GpuMemoryProbe(clock=clock) if gpu_probe is None else gpu_probe
        self.ticker = ticker
        self.size = (width, height)
        self.stages: dict[str, StageProgress] = {}
        self.start_time = clock()
        self.last_draw = self.start_time
        self.drawn = 0  # lines of the live block on screen
        self.closed = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- feeding ---------------------------------------------------------------------------------------

    def start(self, stages: list[tuple[str, int, int]]) -> None:
        """The stages to run, in order, as ``(name, units planned, images planned)``."""
        with self._lock:
            self.stages = {name: StageProgress(name, units, images) for name, units, images in stages if units}
            self.start_time = self.last_draw = self.clock()
        if self.mode != "off" and self.stages and self.ticker:
            every = REFRESH_S if self.mode == "live" else min(self.interval, REFRESH_S * 4)
            self._thread = threading.Thread(target=self._tick_loop, args=(every,), name="grand-progress", daemon=True)
            self._thread.start()

    def started(self, stage: str, unit_id: str, at: float | None = None) -> None:
        """``stage`` began on ``unit_id`` (``at``: when, by the board's clock; default now)."""
        with self._lock:
            st = self.stages.get(stage)
            if st is None or unit_id in st.ended:
                return
            at = self.clock() if at is None else at
            st.first_start = at if st.first_start is None else min(st.first_start, at)
            st.running[unit_id] = at
            st.changed = True

    def ended(
        self,
        stage: str,
        unit_id: str,
        status: str,
        images: int = 0,
        errors: int = 0,
        error_types: dict[str, int] | None = None,
        gpu_bytes: int = 0,
        at: float | None = None,
    ) -> None:
        """``stage`` ended on ``unit_id`` with ``status`` (done, failed or skipped); ``at`` as for :meth:`started`."""
        with self._lock:
            st = self.stages.get(stage)
            if st is None:
                return
            if at is not None or unit_id not in st.ended:  # a unit reported again keeps the time it ended
                at = self.clock() if at is None else at
                st.first_start = at if st.first_start is None else min(st.first_start, at)
                st.last_end = at if st.last_end is None else max(st.last_end, at)
            st.gpu_bytes = max(st.gpu_bytes, gpu_bytes)
            st.end(unit_id, status, images, errors, error_types or {})

    # -- drawing ---------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Redraw the live block, or write the lines that are due."""
        with self._lock:
            if self.closed or self.mode == "off":
                return
            now = self.clock()
            if self.mode == "live":
                self._draw(self.block(now))
            elif now - self.last_draw >= self.interval:
                self._write_lines(now)

    def write(self, text: str) -> None:
        """Print ``text`` (e.g. a warning) above the live block, which is redrawn below it."""
        with self._lock:
            if self.mode == "live" and self.drawn and not self.closed:
                self._clear()
                self._emit(text.rstrip("\n") + "\n")
                self._draw(self.block(self.clock()))
            else:
                self._emit(text.rstrip("\n") + "\n")

    def close(self) -> None:
        """Stop redrawing; the live block stays on screen with its final figures."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * REFRESH_S + 1)
        with self._lock:
            if self.closed:
                return
            if self.mode == "live" and self.stages:
                self._draw(self.block(self.clock()))
            self.closed = True

    def header(self, now: float, elapsed: bool = True) -> str:
        """``run 01:12, 12/30 stages finished, 40/120 (stage, unit) tasks, ETA 02:24, GPU mem 3.1/79.6 GiB``
        (without ``elapsed``: ``run: 12/30 stages finished, …``)."""
        tasks = sum(st.units_total for st in self.stages.values())
        ended = sum(len(st.ended) for st in self.stages.values())
        finished = sum(1 for st in self.stages.values() if st.finished)
        spent = now - self.start_time
        parts = [f"{finished}/{len(self.stages)} stages finished", f"{ended}/{tasks} (stage, unit) tasks"]
        if 0 < ended < tasks:
            parts.append(f"ETA {format_interval(spent / ended * (tasks - ended))}")
        gpu = self.gpu_probe()
        if gpu:
            parts.append(gpu)
        return (f"run {format_interval(spent)}, " if elapsed else "run: ") + ", ".join(parts)

    def block(self, now: float) -> list[str]:
        """The live block: the header, then the stages that are running or have begun, finished stages folded
        into one line when the terminal is too short for all of them."""
        width, height = self._terminal_size()
        active = [st for st in self.stages.values() if st.first_start is not None and not st.finished]
        done = [st for st in self.stages.values() if st.finished]
        waiting = [st for st in self.stages.values() if st.first_start is None and not st.finished]
        lines = [self.header(now)]
        room = max(3, height - 2) - 1
        if len(done) + len(active) + (1 if waiting else 0) <= room:
            lines += ["  ✓ " + st.line(now) for st in done]
        elif done:
            lines.append(f"  ✓ {len(done)} stages finished: " + ", ".join(st.name for st in done))
        lines += ["  ▶ " + st.line(now) for st in active[: max(1, room - 2)]]
        if len(active) > max(1, room - 2):
            lines.append(f"  ▶ … {len(active) - max(1, room - 2)} more stages running")
        if waiting:
            lines.append(f"  · {len(waiting)} stages waiting: " + ", ".join(st.name for st in waiting))
        return [line if len(line) < width else line[: max(1, width - 2)] + "…" for line in lines]

    def due_lines(self, now: float) -> list[str]:
        """Lines mode: one line per stage that moved since the last round or is still running, after the run's line
        when a stage moved."""
        stamp = f"[{format_interval(now - self.start_time)}]"
        moved = any(st.changed for st in self.stages.values())
        out = [f"{stamp} {self.header(now, elapsed=False)}"] if moved else []
        for st in self.stages.values():
            if st.changed or st.running:
                out.append(f"{stamp} {st.line(now)}")
                st.changed = False
        return out

    def _write_lines(self, now: float) -> None:
        self.last_draw = now
        lines = self.due_lines(now)
        if lines:
            self._emit("\n".join(lines) + "\n")

    def _terminal_size(self) -> tuple[int, int]:
        """The size given, else that of the terminal the display writes to (during a command-line run file
        descriptors 1 and 2 go to the log, so the usual lookup would fall back to 80×24), else the usual lookup."""
        width, height = self.size
        if width is None or height is None:
            try:
                size = os.get_terminal_size(self.stream.fileno())
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                size = shutil.get_terminal_size((100, 24))
            width, height = width or size.columns, height or size.lines
        return width, height

    def _clear(self) -> None:
        if self.drawn:
            self._emit(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's first line, then clear to the end
            self.drawn = 0

    def _draw(self, lines: list[str]) -> None:
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self._emit(up + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J")
        self.drawn = len(lines)

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the console went away (a closed pipe): the run goes on
            self.mode = "off"

    def _tick_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self.tick()
