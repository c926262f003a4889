"""Named fault points for crash testing: the process kills itself with SIGKILL at a chosen point.

Set ``GRAND_ENGINE_FAULT=<point>[:<n>]@<marker file>`` to kill the process on the ``n``-th time (default
1) it passes ``<point>``. The marker file is created atomically when the fault fires, so the fault fires
once across every process that inherits the variable (a restarted Ray worker does not die again). With
the variable unset a fault point costs one dictionary lookup.

Points: ``executor.before_process``, ``executor.after_process``, ``executor.after_table_write`` (the
table is renamed into place, the record not yet returned), ``driver.before_commit`` (the driver holds a
record, the manifest is not yet written), ``driver.before_summary``.
"""

from __future__ import annotations

import os
import signal

ENV = "GRAND_ENGINE_FAULT"
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if the configured fault is ``name`` and its turn has come."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, marker = spec.partition("@")
    point, _, nth = point.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{name} pid={os.getpid()}\n".encode())
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
