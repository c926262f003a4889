"""The progress displays. Exports and ``show``: a bar on a terminal, one line per interval otherwise, nothing when
disabled. Runs: per-stage lines per interval, or a block redrawn in place on a terminal.

The clock is a list of times the test advances by hand, so the lines are known exactly.
"""

from __future__ import annotations

import io
import os
import re

from grand_engine.progress import GpuMemoryProbe, Progress, StageBoard


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


# -- the run display ---------------------------------------------------------------------------------


def _board(stream, mode: str, clock: Clock) -> StageBoard:
    board = StageBoard(stream, mode=mode, interval=30.0, clock=clock, gpu_probe=lambda: "", ticker=False)
    board.start([("images", 2, 8), ("t_area", 2, 8), ("t_none", 0, 0)])
    return board


def test_run_lines_one_per_stage_that_moved_or_runs_every_interval():
    """Every 30 s: the run's line when a stage moved, then a line per stage that moved or runs."""
    clock, out = Clock(), io.StringIO()
    board = _board(out, "lines", clock)
    assert list(board.stages) == ["images", "t_area"]  # a stage with nothing to do is not shown
    clock.now = 2.0
    board.started("images", "u0")
    clock.now = 3.0
    board.ended("images", "u0", "done", images=4, errors=1, error_types={"ImageError": 1})
    board.started("t_area", "u0")
    clock.now = 10.0
    board.tick()
    assert out.getvalue() == ""  # less than one interval
    clock.now = 30.0
    board.tick()
    # run: 1 of 4 (stage, unit) tasks ended in 30 s, ETA 90 s. images: 4 images in the 28 s since its first start
    # (7 s per image); 1 of 2 units ended in 28 s: ETA 28 s. t_area: its unit has run since 3 s.
    assert out.getvalue().splitlines() == [
        "[00:30] run: 0/2 stages finished, 1/4 (stage, unit) tasks, ETA 01:30",
        "[00:30] images: 1/2 units (50%), 4 images, 7.0 s/image, ETA 00:28, 1 error row (ImageError 1)",
        "[00:30] t_area: 0/2 units (0%), 1 running (00:27)",
    ]
    clock.now = 31.0
    board.ended("images", "u1", "done", images=4)
    board.ended("images", "u1", "done", images=4)  # reported twice (a worker's news, then the commit): counted once
    clock.now = 59.0
    board.tick()
    clock.now = 60.0
    board.tick()
    # images finished: 8 images between its first start (2 s) and its last end (31 s): 3.625 s per image
    assert out.getvalue().splitlines()[3:] == [
        "[01:00] run: 1/2 stages finished, 2/4 (stage, unit) tasks, ETA 01:00",
        "[01:00] images: 2/2 units (100%), 8 images, 3.6 s/image, 1 error row (ImageError 1)",
        "[01:00] t_area: 0/2 units (0%), 1 running (00:57)",
    ]
    board.ended("images", "u0", "done", images=4, errors=1, error_types={"ImageError": 1})  # its commit: no news
    clock.now = 90.0
    board.tick()  # nothing ended since: only the running stage's line
    assert out.getvalue().splitlines()[6:] == ["[01:30] t_area: 0/2 units (0%), 1 running (01:27)"]
    board.ended("t_area", "u0", "failed")
    board.ended("t_area", "u1", "skipped")
    assert board.stages["t_area"].line(60.0) == "t_area: 2/2 units (100%), 1 failed, 1 skipped"
    assert board.header(90.0) == "run 01:30, 2/2 stages finished, 4/4 (stage, unit) tasks"
    board.close()
    assert out.getvalue().count("\n") == 7  # closing adds nothing: the summary follows


def test_news_carries_the_time_it_happened_and_a_commit_keeps_it():
    clock = Clock()
    board = StageBoard(io.StringIO(), mode="lines", clock=clock, gpu_probe=lambda: "", ticker=False)
    board.start([("images", 1, 4)])
    clock.now = 50.0  # a Ray worker's news reaches the driver late, in one batch
    board.started("images", "u0", at=10.0)
    board.ended("images", "u0", "done", images=4, at=12.0)
    clock.now = 80.0
    board.ended("images", "u0", "done", images=4)  # the commit, when the unit left the whole pipeline
    st = board.stages["images"]
    assert (st.first_start, st.last_end, st.rate(80.0)) == (10.0, 12.0, 2.0)  # 4 images in 2 s


def test_a_unit_reported_again_with_other_figures_replaces_its_first_report():
    clock, out = Clock(), io.StringIO()
    board = _board(out, "lines", clock)
    board.ended("images", "u0", "done", images=4, errors=2, error_types={"ImageError": 2})
    board.ended("images", "u0", "done", images=4, errors=1, error_types={"MissingAnnotation": 1})
    st = board.stages["images"]
    assert (st.done, st.images, st.errors, st.error_types) == (1, 4, 1, {"MissingAnnotation": 1})
    board.started("images", "u0")  # news of a start after the end (a late event): the unit stays ended
    assert st.running == {}


def screen(text: str) -> list[str]:
    """The lines a terminal shows after ``text``, with the control sequences the live display uses: ``ESC[nF``
    (up n lines, to column 1), ``ESC[K`` (clear to the end of the line), ``ESC[J`` (clear to the end of the screen)."""
    rows, row, col = [""], 0, 0
    for token in re.split(r"(\x1b\[\d*[FKJ]|\n)", text):
        if token == "\n":
            row, col = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        elif token.startswith("\x1b[") and token.endswith("F"):
            row, col = max(0, row - int(token[2:-1] or 1)), 0
        elif token.startswith("\x1b[") and token.endswith("K"):
            rows[row] = rows[row][:col]
        elif token.startswith("\x1b[") and token.endswith("J"):
            rows[row] = rows[row][:col]
            del rows[row + 1 :]
        else:
            rows[row] = rows[row][:col] + token + rows[row][col + len(token) :]
            col += len(token)
    return [r for r in rows if r]


def test_live_block_redrawn_in_place_with_messages_above_it():
    clock, term = Clock(), Terminal()
    board = StageBoard(term, clock=clock, gpu_probe=lambda: "GPU mem 3.0/79.6 GiB", ticker=False, width=200, height=30)
    assert board.mode == "live"
    board.start([("images", 2, 8), ("t_area", 2, 8), ("t_pixels", 2, 8)])
    clock.now = 2.0
    board.started("images", "u0")
    board.tick()
    clock.now = 4.0
    board.ended("images", "u0", "done", images=4)
    board.tick()
    board.write("WARNING: depth fell back to the CPU")
    clock.now = 6.0
    board.ended("images", "u1", "done", images=4)
    board.started("t_area", "u0")
    board.close()
    assert screen(term.getvalue()) == [
        "WARNING: depth fell back to the CPU",
        "run 00:06, 1/3 stages finished, 2/6 (stage, unit) tasks, ETA 00:12, GPU mem 3.0/79.6 GiB",
        "  ✓ images: 2/2 units (100%), 8 images, 2.0 images/s",
        "  ▶ t_area: 0/2 units (0%), 1 running (00:00)",
        "  · 1 stages waiting: t_pixels",
    ]


def test_live_block_folds_finished_stages_on_a_short_terminal():
    clock, term = Clock(), Terminal()
    board = StageBoard(term, clock=clock, gpu_probe=lambda: "", ticker=False, width=60, height=5)
    board.start([(f"s{i}", 1, 1) for i in range(6)])
    for i in range(4):
        board.ended(f"s{i}", "u0", "done", images=1)
    board.started("s4", "u0")
    block = board.block(10.0)
    assert block[1] == "  ✓ 4 stages finished: s0, s1, s2, s3"
    assert block[2].startswith("  ▶ s4: 0/1 units") and block[3] == "  · 1 stages waiting: s5"
    assert all(len(line) < 60 for line in block)


def test_gpu_memory_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '1024, 81920'\necho '2048, 81920'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    clock = Clock()
    probe = GpuMemoryProbe(every=5.0, clock=clock)
    assert probe() == "GPU mem 1.0+2.0/80.0 GiB each"
    fake.write_text("#!/bin/sh\necho '4096, 81920'\n")
    clock.now = 4.0
    assert probe() == "GPU mem 1.0+2.0/80.0 GiB each"  # read at most every 5 s
    clock.now = 5.0
    assert probe() == "GPU mem 4.0/80.0 GiB"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert GpuMemoryProbe()() == ""  # no NVIDIA driver: nothing shown


def test_live_block_measures_the_terminal_it_writes_to():
    """During a command-line run, descriptors 1 and 2 go to the log file: the size must come from the display's own
    stream (here a pseudo-terminal of 150×50)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 150, 0, 0))
    with os.fdopen(os.dup(follower), "w") as stream:
        board = StageBoard(stream, ticker=False, gpu_probe=lambda: "")
        assert board.mode == "live" and board._terminal_size() == (150, 50)
    os.close(leader)
    os.close(follower)
