"""The output lock: one driver per output, stale locks taken over, heartbeat, loss detection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grand_engine.cli import main
from grand_engine.config import load_manifest
from grand_engine.io.store import OutputStore
from grand_engine.runtime.lock import (
    LOCK_FILE,
    LockInfo,
    LockLostError,
    OutputLock,
    OutputLockedError,
    output_lock,
    pid_alive,
    read_lock,
    stale_reason,
)
from grand_engine.runtime.manifests import MANIFESTS, host_name
from grand_engine.runtime.pipeline import build_pipeline
from grand_engine.runtime.plan import make_plan
from grand_engine.runtime.run import execute
from tests.runtime.stages_for_tests import executions

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from grand_engine.io.store import OutputStore
from grand_engine.runtime.lock import OutputLock
lock = OutputLock(OutputStore(sys.argv[1]), heartbeat_s=0.2).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _write_lock(out: Path, **fields) -> LockInfo:
    now = time.time()
    info = LockInfo(
        **{"token": "t-other", "host": "node-b", "pid": 4242, "started_at": now - 60, "heartbeat_at": now, **fields}
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_FILE).write_text(info.to_json())
    return info


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _cli_run(manifest, shards, out, *extra) -> int:
    return main(
        ["run", "--shards", str(shards), "--out", str(out), "--manifest", str(manifest), "--backend", "inline"]
        + ["--no-progress", *extra]
    )


def test_a_second_driver_is_refused_until_the_first_is_gone(shards, test_manifest, tmp_path, capsys, caplog):
    manifest, log = test_manifest()
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _cli_run(manifest, shards, out) == 2
        err = capsys.readouterr().err
        assert f"is in use by another grand-engine driver: host {host_name()} pid {holder.pid}, started " in err
        assert "--force-unlock" in err
        # refused before planning: nothing indexed, nothing run, no record
        assert executions(log) == [] and not (out / MANIFESTS).exists() and not (out / "_index").exists()
        held = read_lock(OutputStore(out))
        assert held is not None and held.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()

    # the holder died without releasing: its lock is stale (dead pid on this host) and is taken over
    assert (out / LOCK_FILE).exists()
    assert _cli_run(manifest, shards, out) == 0
    assert f"taking over the lock of host {host_name()} pid {holder.pid}" in caplog.text
    assert "no longer exists" in caplog.text
    assert len(executions(log)) == 12 and not (out / LOCK_FILE).exists()


def test_lock_of_another_host_is_honoured_until_its_heartbeat_is_old(tmp_path, caplog):
    out = tmp_path / "out"
    store = OutputStore(out)
    _write_lock(out, host="node-b", pid=4242, command="grand-engine run --out x")
    with pytest.raises(OutputLockedError, match=r"host node-b pid 4242, started .*command: grand-engine run --out x"):
        OutputLock(store).acquire()

    _write_lock(out, host="node-b", heartbeat_at=time.time() - 300)
    lock = OutputLock(store, stale_after_s=120, settle_s=0).acquire()
    try:
        assert lock.replaced is not None and lock.replaced.host == "node-b"
        assert "heartbeat is 300 s old" in caplog.text
        current = read_lock(store)
        assert current.host == host_name() and current.pid == os.getpid() and current.token == lock.info.token
    finally:
        lock.release()
    assert read_lock(store) is None


def test_force_unlock_takes_over_a_live_lock(tmp_path):
    out = tmp_path / "out"
    store = OutputStore(out)
    _write_lock(out, host="node-b")
    with OutputLock(store, force=True, settle_s=0) as lock:
        assert lock.replaced.host == "node-b"
        assert read_lock(store).token == lock.info.token


def test_stale_rule():
    now = time.time()
    here = host_name()
    mine = LockInfo("t", here, os.getpid(), now, now)
    assert stale_reason(mine, 120, now) is None
    assert "no longer exists" in stale_reason(LockInfo("t", here, _dead_pid(), now, now), 120, now)
    # a process on another host cannot be checked: only its heartbeat counts
    assert stale_reason(LockInfo("t", "node-b", _dead_pid(), now, now - 119), 120, now) is None
    assert "121 s old" in stale_reason(LockInfo("t", "node-b", 1, now, now - 121), 120, now)
    assert pid_alive(os.getpid()) and not pid_alive(_dead_pid()) and not pid_alive(0)


def test_zombie_holder_counts_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}").exists() and "Z" not in _state(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert not pid_alive(proc.pid)  # exited, not yet reaped
    finally:
        proc.wait()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def test_unreadable_lock_is_stale(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text("{not json")
    with OutputLock(OutputStore(out), settle_s=0) as lock:
        assert lock.replaced.host == "?"


def test_heartbeat_refreshes_and_notices_a_takeover(tmp_path):
    store = OutputStore(tmp_path / "out")
    first = OutputLock(store, heartbeat_s=0.05).acquire()
    try:
        started = read_lock(store).heartbeat_at
        deadline = time.monotonic() + 5
        while read_lock(store).heartbeat_at == started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert read_lock(store).heartbeat_at > started
        first.ensure_held()

        second = OutputLock(store, force=True, settle_s=0).acquire()
        deadline = time.monotonic() + 5
        while first.lost_to is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LockLostError, match="another driver took over"):
            first.ensure_held()
        first.release()  # must not delete the new holder's lock
        assert read_lock(store).token == second.info.token
        second.release()
        assert read_lock(store) is None
    finally:
        first.release()


def test_output_lock_is_exclusive_even_within_one_process(tmp_path):
    """The driver takes the lock once; a second acquisition (same thread or another) is refused, not nested."""
    store = OutputStore(tmp_path / "out")
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with output_lock(store):
                pass
        except OutputLockedError as exc:
            errors.append(exc)

    with output_lock(store) as held:
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            with output_lock(store):
                pass
        assert read_lock(store).token == held.info.token  # the refused attempt did not disturb the lock
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert len(errors) == 1 and f"pid {os.getpid()}" in str(errors[0])
    assert read_lock(store) is None


def test_execute_stops_committing_once_the_lock_is_lost(shards, test_manifest, tmp_path):
    manifest_file, log = test_manifest()
    out = tmp_path / "out"
    store = OutputStore(out)
    pipeline = build_pipeline(load_manifest(manifest_file))
    with output_lock(store) as lock:
        plan = make_plan(pipeline, [str(shards)], store, unit_size=2)
        # another driver forces the lock while this one is about to run
        (out / LOCK_FILE).write_text(json.dumps({**json.loads((out / LOCK_FILE).read_text()), "token": "t-new"}))
        lock.refresh()
        with pytest.raises(LockLostError):
            execute(plan, store, lock, backend="inline", progress=False)
    assert not (out / MANIFESTS).exists()
    assert executions(log) == []  # the root stage ran first; its record was refused, nothing followed


def test_credentials_in_the_command_stay_out_of_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/grand-engine", "run", "--out", "s3://AKIA1:SECRET2@bkt/p"])
    with OutputLock(OutputStore(tmp_path / "o")):
        text = (tmp_path / "o" / LOCK_FILE).read_text()
    assert "SECRET2" not in text and "AKIA1" not in text
    assert json.loads(text)["command"] == "grand-engine run --out s3://***@bkt/p"


def test_file_systems_without_hard_links_use_write_and_read_back(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    store = OutputStore(tmp_path / "o")
    with OutputLock(store, settle_s=0) as lock:
        assert read_lock(store).token == lock.info.token and lock.replaced is None
        with pytest.raises(OutputLockedError):
            OutputLock(store, settle_s=0).acquire()
    assert read_lock(store) is None
