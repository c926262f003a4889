"""Progress of exports and ``show``: a bar on a terminal, one line per interval otherwise, nothing when disabled.

The clock is a list of times the test advances by hand, so the lines are known exactly.
"""

from __future__ import annotations

import io

from grand_engine.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_when_stderr_is_not_a_terminal():
    clock, out = Clock(), io.StringIO()
    progress = Progress(10, "export level4", "image", stream=out, interval=10.0, clock=clock)
    assert progress.mode == "lines"
    clock.now = 4.0
    progress.update(4)
    assert out.getvalue() == ""  # less than one interval since the start
    clock.now = 10.0
    progress.update(2, records=5)  # 6 images in 10 s: 0.6 images/s, 4 left: ETA 6.67 s
    clock.now = 15.0
    progress.update(4, records=9)  # 5 s since the last line: none
    clock.now = 20.0
    progress.close()
    progress.close()  # a second close writes nothing
    assert out.getvalue().splitlines() == [
        "export level4: 6/10 images (60%), 0.6 images/s, 00:10 elapsed, ETA 00:06, records 5",
        "export level4: 10/10 images (100%), 0.5 images/s, 00:20 elapsed, records 9",
    ]


def test_disabled_writes_nothing():
    clock, out = Clock(), Terminal()
    with Progress(3, "explorer", "image", enabled=False, stream=out, clock=clock) as progress:
        clock.now = 60.0
        progress.update(3)
    assert progress.mode == "off" and out.getvalue() == ""


def test_a_bar_on_a_terminal():
    out = Terminal()
    with Progress(4, "explorer", "image", stream=out) as progress:
        progress.update(3)
    assert progress.mode == "bar"
    text = out.getvalue()
    assert "\r" in text and "explorer" in text and "3/4" in text and "\n" not in text.rstrip("\n")


def test_an_empty_loop_still_ends_with_one_line():
    clock, out = Clock(), io.StringIO()
    Progress(0, "export grandf", "image", stream=out, clock=clock).close()
    assert out.getvalue() == "export grandf: 0/0 images, 0.0 images/s, 00:00 elapsed\n"
