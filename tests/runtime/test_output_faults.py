"""Output faults: an output folder that cannot be written, and a disk that fills up during the run.

The disk is filled by a stand-in for the output store's low-level ``open``: files it opens for writing
under the output folder share a fixed number of free bytes, and the write that crosses the limit stores
what fits and fails with ``ENOSPC`` — what a real file system does. The free space is set from the
bytes a complete run writes, so the disk fills in the middle of the run. The checks: a clear error that
names a path of the output and the reason (exit code 2 for the command line, no traceback), no manifest
record for any (stage, unit) whose files were not completely written, no temporary file left, and a
later rerun, once there is space, recomputes only what is missing and completes.
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import grand_engine.io.store as store_module
from grand_engine.cli import main
from grand_engine.io.store import TMP_MARKER, OutputStore
from grand_engine.runtime.manifests import data_path, errors_path
from grand_engine.runtime.records import read_records

REPO = Path(__file__).resolve().parents[2]

STAGES = ("images", "t_area", "t_double", "t_pixels")


class FullDisk:
    """Files opened for writing below ``root`` share ``free`` bytes; past them every write fails (ENOSPC)."""

    def __init__(self, root: Path, free: int, full_from: str | None = None) -> None:
        self.root = str(root)
        self.free = free
        self.full_from = full_from  # the disk is full from the first write to this file on
        self.written = 0
        self.refused: list[str] = []  # files whose write hit the full disk

    def open(self, file, mode="r", *args, **kwargs):
        fh = builtins.open(file, mode, *args, **kwargs)
        if any(m in mode for m in "wax") and os.fspath(file).startswith(self.root):
            if self.full_from and os.fspath(file).startswith(self.full_from + TMP_MARKER):
                self.free = 0
            return _LimitedFile(fh, self)
        return fh


class _LimitedFile:
    def __init__(self, fh, disk: FullDisk) -> None:
        self._fh = fh
        self._disk = disk

    def write(self, data) -> int:
        size = len(data)
        if size > self._disk.free:
            fits = self._disk.free
            self._fh.write(data[:fits])  # a real disk keeps the part that fitted
            self._disk.free = 0
            self._disk.written += fits
            self._disk.refused.append(self._fh.name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._fh.name)
        self._disk.free -= size
        self._disk.written += size
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


def cli_run(manifest: Path, shards: Path, out: Path) -> int:
    return main(
        [
            "run",
            "--shards",
            str(shards),
            "--out",
            str(out),
            "--manifest",
            str(manifest),
            "--backend",
            "inline",
            "--no-progress",
        ]
    )


def bytes_of_a_full_run(manifest: Path, shards: Path, out: Path, monkeypatch) -> int:
    disk = FullDisk(out, free=1 << 40)
    with monkeypatch.context() as m:
        m.setattr(store_module, "open", disk.open, raising=False)
        assert cli_run(manifest, shards, out) == 0
    return disk.written


def check_consistent(out: Path) -> set[tuple[str, str]]:
    """Every manifest record's table (and error file, if it counts errors) is complete and readable."""
    records = read_records(OutputStore(out))
    for rec in records:
        assert pq.read_table(out / data_path(rec.stage, rec.unit_id)).num_rows == rec.rows
        if rec.errors:
            assert pq.read_table(out / errors_path(rec.stage, rec.unit_id)).num_rows == rec.errors
    assert not [p for p in out.rglob("*") if TMP_MARKER in p.name]
    return {(r.stage, r.unit_id) for r in records}


def test_disk_full_mid_run_stops_with_the_path_and_a_rerun_completes(
    shards, test_manifest, tmp_path, capsys, monkeypatch
):
    manifest, log = test_manifest()
    total = bytes_of_a_full_run(manifest, shards, tmp_path / "reference", monkeypatch)
    complete = check_consistent(tmp_path / "reference")
    assert len(complete) == 16  # 4 units × 4 stages
    capsys.readouterr()

    out = tmp_path / "out"
    disk = FullDisk(out, free=total // 2)
    with monkeypatch.context() as m:
        m.setattr(store_module, "open", disk.open, raising=False)
        code = cli_run(manifest, shards, out)
    captured = capsys.readouterr()

    assert code == 2
    [message] = [line for line in captured.err.splitlines() if line.startswith("grand-engine: error:")]
    assert "No space left on device" in message and f"cannot write {out}/" in message
    assert "Traceback" not in captured.err + captured.out
    assert disk.refused, "the disk never filled up: the test did not exercise anything"
    done = check_consistent(out)
    assert 0 < len(done) < len(complete)  # stopped in the middle
    # No record for the (stage, unit) whose write failed.
    first_refused = Path(disk.refused[0].split(TMP_MARKER)[0]).relative_to(out).with_suffix("")
    parts = first_refused.parts[1:] if first_refused.parts[0] in ("_errors", "_manifests") else first_refused.parts
    assert (parts[0], "/".join(parts[1:])) not in done

    log.unlink(missing_ok=True)
    assert cli_run(manifest, shards, out) == 0  # space freed: the rerun completes
    assert check_consistent(out) == complete
    reran = [tuple(line.split()) for line in log.read_text().splitlines()]
    assert sorted(reran) == sorted(p for p in complete - done if p[0] != "images")
    for stage in STAGES:
        ids = [
            i
            for f in sorted((out / stage).rglob("*.parquet"))
            for i in pq.read_table(f).column("image_id").to_pylist()
        ]
        assert sorted(ids) == sorted(f"sa_{s * 10 + i}" for s in range(2) for i in range(4)), stage


def test_disk_full_error_names_the_table_that_could_not_be_written(
    shards, test_manifest, tmp_path, capsys, monkeypatch
):
    """The disk fills up exactly when a table is written: the error must name that table, not only the
    failure note the driver then cannot write either."""
    manifest, _ = test_manifest()
    out = tmp_path / "out"
    table = str(out / data_path("t_area", "sa_000000/00001"))
    disk = FullDisk(out, free=1 << 40, full_from=table)
    with monkeypatch.context() as m:
        m.setattr(store_module, "open", disk.open, raising=False)
        code = cli_run(manifest, shards, out)
    err = capsys.readouterr().err
    assert code == 2 and disk.refused[0].startswith(table + TMP_MARKER)
    assert f"cannot write {table}: No space left on device" in err, err
    assert ("t_area", "sa_000000/00001") not in check_consistent(out)


def test_one_table_write_refused_fails_that_unit_only_and_names_the_file(
    shards, test_manifest, tmp_path, capsys, monkeypatch
):
    """A transient full disk on one table write (both tries): that (stage, unit) fails, the rest completes."""
    manifest, log = test_manifest()
    out = tmp_path / "out"
    victim = str(out / data_path("t_double", "sa_000001/00000"))
    real_open = builtins.open
    refusals = []

    def flaky_open(file, mode="r", *args, **kwargs):
        if "w" in mode and os.fspath(file).startswith(victim + TMP_MARKER) and len(refusals) < 2:
            refusals.append(file)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file)
        return real_open(file, mode, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(store_module, "open", flaky_open, raising=False)
        code = cli_run(manifest, shards, out)
    text = capsys.readouterr().out
    assert code == 1 and len(refusals) == 2
    assert f"FAILED t_double sa_000001/00000: StoreError: cannot write {victim}: No space left on device" in text
    done = check_consistent(out)
    assert ("t_double", "sa_000001/00000") not in done and ("t_pixels", "sa_000001/00000") not in done
    assert len(done) == 14
    assert not Path(victim).exists()

    log.unlink()
    assert cli_run(manifest, shards, out) == 0
    assert sorted(tuple(line.split()) for line in log.read_text().splitlines()) == [
        ("t_double", "sa_000001/00000"),
        ("t_pixels", "sa_000001/00000"),
    ]
    assert len(check_consistent(out)) == 16


def test_output_below_a_regular_file_exits_2_naming_the_path(shards, test_manifest, tmp_path, capsys):
    manifest, _ = test_manifest()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    assert cli_run(manifest, shards, blocker / "out") == 2
    err = capsys.readouterr().err
    assert f"cannot write {blocker}/out/_probe" in err and "Not a directory" in err
    assert blocker.read_text() == "a file where a folder should be"


@pytest.fixture
def world_readable_tmp():
    """A temporary folder an unprivileged user can read (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="grand-ro-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(path)


UNPRIVILEGED_CLI = """
import os, sys
import tests.runtime.stages_for_tests
import grand_engine.cli as cli, grand_engine.runtime.lock, grand_engine.runtime.run
from grand_engine.io.store import OutputStore
if os.geteuid() == 0:  # root ignores file permissions: continue as the unprivileged user 65534
    os.setgid(65534)
    os.setuid(65534)
OutputStore(sys.argv[1]).check_writable()  # this user can write elsewhere: only OUT is refused
sys.exit(cli.main(sys.argv[2:]))
"""


def test_read_only_output_folder_exits_2_naming_the_path(world_readable_tmp):
    """Permission denied on OUT: exit code 2, the path in the message, nothing written."""
    from tests.conftest import write_sa1b_tar

    base = world_readable_tmp
    (base / "shards").mkdir(mode=0o755)
    write_sa1b_tar(base / "shards" / "sa_000000.tar", [("sa_1", 24, 16), ("sa_2", 24, 16)])
    (base / "shards" / "sa_000000.tar").chmod(0o644)
    manifest = base / "m.yaml"
    manifest.write_text(textwrap.dedent("name: ro\nstages:\n  images: {}\n  t_area: {}\n"))
    manifest.chmod(0o644)
    locked, writable = base / "locked", base / "writable"
    locked.mkdir()
    locked.chmod(0o555)
    writable.mkdir()
    writable.chmod(0o777)
    out = locked / "out"
    args = ["run", "--shards", str(base / "shards"), "--out", str(out), "--manifest", str(manifest)]
    env = {k: v for k, v in os.environ.items() if k != "GRAND_ENGINE_FAULT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED_CLI, str(writable / "out"), *args, "--backend", "inline", "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert f"grand-engine: error: cannot write {out}/_probe" in result.stderr
    assert "Permission denied" in result.stderr and "Traceback" not in result.stderr
    assert list(locked.iterdir()) == []
