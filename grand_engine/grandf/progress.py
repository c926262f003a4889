"""Progress of a loop of known length (``grand-engine export`` and ``show``), written to stderr.

On a terminal it is a tqdm bar. When stderr is not a terminal (a log file, a CI job, a pipe) a bar would write a
carriage-return update per step into the file, so one concise line is written per interval instead, and one
when the loop ends::

    export level4: 384/1000 images (38%), 41.2 images/s, 00:09 elapsed, ETA 00:14, records 384
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 10.0
"""Seconds between two progress lines when stderr is not a terminal."""


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


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
        self.mode = "off" if not enabled else ("bar" if _is_terminal(self.stream) else "lines")
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream) if self.mode == "bar" else None
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
            f"{tqdm.format_interval(elapsed)} elapsed",
        ]
        if rate > 0 and self.done < self.total:
            parts.append(f"ETA {tqdm.format_interval((self.total - self.done) / rate)}")
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
