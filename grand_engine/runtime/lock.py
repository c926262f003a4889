"""The output lock: one driver per output folder.

The driver is the only process that writes manifest records. Two drivers on one output (a job submitted
twice, a run started by hand next to a running job) would both plan the same work and both commit
records, so a driver takes ``OUT/_lock.json`` before it plans and releases it at the end. The lock names
its holder (host, pid, start time, command) and a daemon thread refreshes its heartbeat every
``heartbeat_s`` seconds.

A lock is **stale**, and is taken over with a warning, when its holder's process no longer exists on
this host, or when its heartbeat is older than ``stale_after_s`` (the holder's machine died or lost the
storage). Otherwise the second driver stops with :class:`OutputLockedError`, whose message names the
holder and the ``--force-unlock`` override.

Creation is atomic on a local or network file system (a hard link of a complete temporary file, which
fails if the lock exists). Object stores have no create-if-absent in pyarrow, so there (and when a stale
lock is taken over) the driver writes its lock, waits ``settle_s``, and reads it back: of two drivers
racing, the one whose write landed last keeps the lock and the other stops. The heartbeat thread also
re-reads the lock; if another driver has taken it (``--force-unlock``), :meth:`OutputLock.ensure_held`
raises :class:`LockLostError` before this driver commits another record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from grand_engine.io.store import TMP_MARKER, OutputStore
from grand_engine.runtime.manifests import host_name

LOCK_FILE = "_lock.json"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 120.0
SETTLE_S = {"local": 0.05, "object": 1.0}  # wait this long before reading a written lock back

log = logging.getLogger(__name__)


class OutputLockedError(RuntimeError):
    """Another live driver holds the output's lock."""


class LockLostError(RuntimeError):
    """This driver's lock was taken over by another driver while it ran."""


@dataclass
class LockInfo:
    """The content of ``_lock.json``."""

    token: str
    host: str
    pid: int
    started_at: float  # epoch seconds
    heartbeat_at: float  # epoch seconds, refreshed by the holder
    command: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LockInfo:
        data = json.loads(text)
        return cls(
            token=str(data["token"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            started_at=float(data["started_at"]),
            heartbeat_at=float(data["heartbeat_at"]),
            command=str(data.get("command", "")),
        )

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at))
        text = (
            f"host {self.host} pid {self.pid}, started {started}, last heartbeat {now - self.heartbeat_at:.0f} s ago"
        )
        return f"{text} (command: {self.command})" if self.command else text


def _redact(text: str) -> str:
    """Hide credentials written into URIs (``s3://KEY:SECRET@bucket``) before they reach logs or the lock."""
    return re.sub(r"://[^/@\s]+@", "://***@", text)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def stale_reason(info: LockInfo, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> str | None:
    """Why a lock may be taken over, or ``None`` while its holder counts as alive."""
    now = time.time() if now is None else now
    if info.host == host_name() and not pid_alive(info.pid):
        return f"process {info.pid} no longer exists on {info.host}"
    age = now - info.heartbeat_at
    if age > stale_after_s:
        return f"its heartbeat is {age:.0f} s old (more than {stale_after_s:.0f} s)"
    return None


def read_lock(store: OutputStore) -> LockInfo | None:
    """The current lock of ``store``; ``None`` when there is none. An unreadable lock file (which atomic
    writes never leave) is reported as a lock held by ``?`` with a zero heartbeat, hence stale."""
    try:
        text = store.read_text(LOCK_FILE)
    except FileNotFoundError:
        return None
    try:
        return LockInfo.from_json(text)
    except (ValueError, KeyError, TypeError):
        return LockInfo(token="", host="?", pid=0, started_at=0.0, heartbeat_at=0.0, command="(unreadable lock file)")


class OutputLock:
    """Exclusive use of one output store by one driver (see the module docstring)."""

    def __init__(
        self,
        store: OutputStore,
        *,
        force: bool = False,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        settle_s: float | None = None,
    ) -> None:
        self.store = store
        self.force = force
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.settle_s = SETTLE_S["local" if store.is_local else "object"] if settle_s is None else settle_s
        self.info: LockInfo | None = None
        self.replaced: LockInfo | None = None  # the stale or forced lock this one took over
        self.lost_to: LockInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._uri = _redact(store.uri)

    # -- acquire / release ----------------------------------------------------------------------
    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`OutputLockedError`; start the heartbeat thread."""
        now = time.time()
        mine = LockInfo(
            token=uuid.uuid4().hex,
            host=host_name(),
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            command=_redact(" ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)))[:500],
        )
        current = read_lock(self.store)
        if current is None and self.store.is_local:
            created = self._create_local(mine)
            if created:
                return self._started(mine)
            if created is False:
                current = read_lock(self.store)  # lost a race for a fresh lock: judge the winner
        if current is not None:
            reason = "--force-unlock" if self.force else stale_reason(current, self.stale_after_s)
            if reason is None:
                raise OutputLockedError(self._refusal(current))
            log.warning("grand-engine: taking over the lock of %s on %s: %s", current.describe(), self._uri, reason)
            self.replaced = current
        # Object stores, and any takeover: write, let a concurrent writer land, read back.
        self.store.write_text(LOCK_FILE, mine.to_json())
        if self.settle_s > 0:
            time.sleep(self.settle_s)
        winner = read_lock(self.store)
        if winner is None or winner.token != mine.token:
            raise OutputLockedError(self._refusal(winner) if winner else f"lost the lock of {self._uri} to a race")
        return self._started(mine)

    def _create_local(self, info: LockInfo) -> bool | None:
        """Create the lock file atomically with its full content; ``False`` if it already exists, ``None``
        if the file system has no hard links (then the write-and-read-back path is used)."""
        assert self.store.local_root is not None
        self.store.local_root.mkdir(parents=True, exist_ok=True)
        target = self.store.full(LOCK_FILE)
        tmp = f"{target}{TMP_MARKER}{uuid.uuid4().hex}"
        with open(tmp, "w") as fh:
            fh.write(info.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        except OSError:
            return None
        finally:
            os.unlink(tmp)

    def _started(self, info: LockInfo) -> OutputLock:
        self.info = info
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="grand-engine-lock", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still this driver's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.info is None:
            return
        try:
            current = read_lock(self.store)
            if current is not None and current.token == self.info.token:
                self.store.delete(LOCK_FILE)
        except OSError as exc:  # the next start judges the leftover lock as stale
            log.warning("grand-engine: could not release the lock of %s: %s", self._uri, exc)
        self.info = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- while held -----------------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.refresh()
            except OSError as exc:  # transient storage trouble: try again at the next beat
                log.warning("grand-engine: lock heartbeat on %s failed: %s", self._uri, exc)
            if self.lost_to is not None:
                return

    def refresh(self) -> None:
        """Write a new heartbeat, or note that another driver now holds the lock."""
        if self.info is None:
            return
        current = read_lock(self.store)
        if current is not None and current.token != self.info.token:
            self.lost_to = current
            log.error("grand-engine: the lock of %s was taken by %s", self._uri, current.describe())
            return
        self.info.heartbeat_at = time.time()
        self.store.write_text(LOCK_FILE, self.info.to_json())

    def ensure_held(self) -> None:
        """Raise :class:`LockLostError` if another driver has taken this output over."""
        if self.lost_to is not None:
            raise LockLostError(
                f"another driver took over {self._uri} ({self.lost_to.describe()}); this driver stops "
                "without committing further manifest records"
            )

    def _refusal(self, holder: LockInfo) -> str:
        return (
            f"{self._uri} is in use by another grand-engine driver: {holder.describe()}. Two drivers on one "
            "output would both write its manifests. Wait for that run to finish or stop it; if it is gone (its "
            "machine died), rerun with --force-unlock. A lock is taken over automatically when its process no "
            f"longer exists on this host or its heartbeat is older than {self.stale_after_s:.0f} s."
        )


@contextlib.contextmanager
def output_lock(store: OutputStore, force: bool = False, **kwargs: float) -> Iterator[OutputLock]:
    """Hold the lock of ``store`` for the block (the driver, :func:`grand_engine.runtime.run.run`, takes it once
    around planning and execution); a second acquisition, even by the same process, is refused."""
    lock = OutputLock(store, force=force, **kwargs).acquire()
    try:
        yield lock
    finally:
        lock.release()
