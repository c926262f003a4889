"""What a run prints: the command line run in a subprocess (real file descriptors, no terminal) over two shards of 4
images with the test stages, lines counted on stdout and stderr.

The manifest makes ``t_area`` refuse ``sa_1`` (one error row), log a warning in ``setup`` (as a model that fell back
to the CPU would) and chatter like a library (a print, a write to file descriptor 2, a Python warning). Expected on
the console: on stdout the plan line, the summary (2 lines, a header, one line per stage) and 4 location lines; on
stderr the warning once and nothing else but progress lines. The chatter and Ray's own logging go to the log file.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grand_engine.runtime.run import status
from tests.test_progress import Terminal, screen

REPO = Path(__file__).resolve().parents[2]
CHILD = "import sys, tests.runtime.stages_for_tests; from grand_engine.cli import main; sys.exit(main(sys.argv[1:]))"
WARNING = "the t_area model fell back to the CPU"
CHATTER = "a library talking to itself"
STAGES = ("images", "t_area", "t_double", "t_pixels")
SUMMARY_LINES = 2 + 1 + len(STAGES)  # units and images lines, the header, one line per stage
LOCATION_LINES = 4  # outputs, errors, log, explorer
PROGRESS_LINE = re.compile(r"^\[\d\d:\d\d\] (images|t_area|t_double|t_pixels): \d+/\d units")
RAY_NOISE = ("Token authentication", "streaming_executor", "core_worker", "Progress bars", "MapWorker", "raylet")


def _manifest(root: Path, replicas: int = 1) -> Path:
    path = root / "manifest.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: test
            unit_size: 2
            stages:
              images: {{}}
              t_area:
                params: {{fail_image: sa_1, warn: "{WARNING}", chatter: "{CHATTER}"}}
                resources: {{replicas: {replicas}}}
              t_double: {{}}
              t_pixels: {{}}
            """
        )
    )
    return path


def _cli(shards: Path, out: Path, manifest: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    args = ["run", "--shards", str(shards), "--out", str(out), "--manifest", str(manifest), *extra]
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _summary_rows(stdout: str) -> dict[str, dict]:
    """The per-stage lines of the summary table, parsed."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stage ") and "error types" in line)
    rows = {}
    for line in lines[start + 1 : start + 1 + len(STAGES)]:
        name, done, failed, skipped, images, rows_, errors, _busy, _wall, *types = line.split()
        rows[name] = {
            "done": int(done),
            "failed": int(failed),
            "skipped": int(skipped),
            "images": int(images),
            "rows": int(rows_),
            "errors": int(errors),
            "error_types": {k: int(v) for k, v in zip(types[::2], types[1::2], strict=True)},
        }
    return rows


def _log_text(out: Path) -> str:
    (log,) = (out / "_logs").glob("*.log")
    return log.read_text()


def _check_summary_matches_records(stdout: str, out: Path) -> None:
    _, stages = status(str(out))
    recorded = {s.stage: s for s in stages}
    for name, row in _summary_rows(stdout).items():
        st = recorded[name]
        assert (row["done"], row["images"], row["rows"], row["errors"]) == (st.done, st.images, st.rows, st.errors)
        assert row["error_types"] == st.error_types and row["failed"] == row["skipped"] == 0
    assert _summary_rows(stdout)["t_area"]["error_types"] == {"ValueError": 1}  # sa_1, worked out by hand


def test_inline_run_console_is_the_plan_the_warning_and_the_summary(shards, tmp_path):
    out = tmp_path / "out"
    result = _cli(shards, out, _manifest(tmp_path), "--backend", "inline")
    assert result.returncode == 0, result.stderr
    stdout = result.stdout.splitlines()
    assert len(stdout) == 1 + SUMMARY_LINES + LOCATION_LINES, result.stdout
    assert stdout[0] == "4 units from 2 shard(s); 16 (stage, unit) tasks to run over 4 stages"
    assert stdout[1] == "units: 4 total, 4 done, 0 already done, 0 failed"
    assert stdout[2].startswith("images: 8 read, error rows: 1, time: ")
    log_path = next(out.joinpath("_logs").glob("*.log"))
    assert stdout[-4:-1] == [
        f"outputs:  {out}   (grand-engine status {out})",
        f"errors:   1 error rows in {out}/_errors   (grand-engine errors {out})",
        f"log:      {log_path}",
    ]
    assert stdout[-1] == f"explorer: grand-engine show {out} --html {out}_explorer"
    # stderr: the stage's warning once; a 30 s progress interval is never reached by a run this short
    assert result.stderr.splitlines() == [f"WARNING: {WARNING}"]
    _check_summary_matches_records(result.stdout, out)
    log = _log_text(out)
    assert f"{CHATTER}\n" in log and f"{CHATTER} (fd 2)" in log and f"{CHATTER} (warnings)" in log
    assert "INFO grand_engine.runtime.run: running 16 (stage, unit) tasks on the inline backend" in log
    assert f"WARNING tests.runtime.stages_for_tests: {WARNING}" in log


def test_quiet_prints_only_the_summary_and_verbose_lets_everything_through(shards, tmp_path):
    manifest = _manifest(tmp_path)
    quiet = _cli(shards, tmp_path / "quiet", manifest, "--backend", "inline", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    lines = quiet.stdout.splitlines()
    assert len(lines) == SUMMARY_LINES + LOCATION_LINES and lines[0].startswith("units: 4 total")

    verbose = _cli(shards, tmp_path / "verbose", manifest, "--backend", "inline", "-v")
    assert verbose.returncode == 0
    assert verbose.stdout.splitlines()[0].startswith("4 units from 2 shard(s)")
    assert CHATTER in verbose.stdout and f"{CHATTER} (fd 2)" in verbose.stderr
    assert "INFO: running 16 (stage, unit) tasks on the inline backend" in verbose.stderr.splitlines()
    assert verbose.stderr.count(f"WARNING: {WARNING}") == 1


@pytest.mark.slow
def test_ray_run_console_has_no_ray_noise_and_the_workers_warning_once(shards, tmp_path):
    out = tmp_path / "out"
    # Two actors run t_area: each logs the warning in its setup; the console shows it once.
    result = _cli(shards, out, _manifest(tmp_path, replicas=2), "--backend", "ray", timeout=600)
    assert result.returncode == 0, result.stderr
    stdout = result.stdout.splitlines()
    assert len(stdout) == 1 + SUMMARY_LINES + LOCATION_LINES, result.stdout
    assert not [line for line in stdout if any(noise in line for noise in RAY_NOISE)]
    err = result.stderr.splitlines()
    assert err.count(f"WARNING: {WARNING}") == 1
    assert all(PROGRESS_LINE.match(line) for line in err if line != f"WARNING: {WARNING}"), result.stderr
    _check_summary_matches_records(result.stdout, out)
    log = _log_text(out)
    assert "Starting execution of Dataset" in log  # Ray Data's own logging
    assert log.count(f"[grand-engine worker] WARNING tests.runtime.stages_for_tests: {WARNING}") >= 1
    assert f"{CHATTER} (fd 2)" in log


def test_on_a_terminal_warnings_print_above_the_live_display(shards, tmp_path, monkeypatch):
    from grand_engine.cli import main

    term, stdout = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(sys, "stdout", stdout)
    out = tmp_path / "out"
    args = ["run", "--shards", str(shards), "--out", str(out), "--manifest", str(_manifest(tmp_path))]
    assert main([*args, "--backend", "inline"]) == 0
    shown = screen(term.getvalue())
    assert shown[0] == f"WARNING: {WARNING}"
    assert re.fullmatch(r"run \d\d:\d\d, 4/4 stages finished, 16/16 \(stage, unit\) tasks(, GPU mem .*)?", shown[1])
    assert [line.split(":")[0] for line in shown[2:]] == [f"  ✓ {name}" for name in STAGES]
    assert shown[3].startswith("  ✓ t_area: 4/4 units (100%), 8 images, ")
    assert shown[3].endswith(", 1 error row (ValueError 1)")
    assert stdout.getvalue().splitlines()[0].startswith("4 units from 2 shard(s)")


def test_a_warning_from_every_worker_reaches_the_console_once(tmp_path):
    from grand_engine.cli import configure_logging
    from grand_engine.cli.console import _LogRouter

    console, log = io.StringIO(), io.StringIO()
    configure_logging(0, console=console)
    try:
        router = _LogRouter(log)
        for pid in (101, 102):  # how Ray prefixes the lines of two actors' stderr on the driver
            router.write(f"(MapWorker(MapBatches(StageWorker)) pid={pid}) [grand-engine worker] WARNING ")
            router.write(f"grand_engine.models.base: {WARNING}\n")
            router.write(f"(MapWorker(MapBatches(StageWorker)) pid={pid}) [grand-engine worker] INFO x: loaded\n")
            router.write(f"(MapWorker(MapBatches(StageWorker)) pid={pid}) {CHATTER}\n")
    finally:
        configure_logging(0)
    assert console.getvalue() == f"WARNING: {WARNING}\n"
    assert log.getvalue().count(WARNING) == 2 and log.getvalue().count(CHATTER) == 2


def test_a_run_that_stops_on_an_error_closes_the_display(shards, test_manifest, tmp_path):
    from grand_engine.config import ConfigError, load_manifest
    from grand_engine.progress import StageBoard
    from grand_engine.runtime.run import ProgressObserver, run

    class Watch(ProgressObserver):
        calls: list[str] = []

        def planned(self, plan, invalidated):
            self.calls.append("planned")
            super().planned(plan, invalidated)

        def stopped(self, error):
            self.calls.append(f"stopped {type(error).__name__}")
            super().stopped(error)

    manifest, _ = test_manifest()
    watch = Watch(StageBoard(io.StringIO(), mode="lines", ticker=False))
    with pytest.raises(ConfigError, match="unknown backend"):
        run(load_manifest(str(manifest)), [str(shards)], str(tmp_path / "out"), backend="nope", observer=watch)
    assert watch.calls == ["planned", "stopped ConfigError"] and watch.board.closed
