"""An S3-compatible server for tests and benchmarks: moto's server mode on 127.0.0.1, one process.

Its request log (one line per HTTP request) is kept in a file so that callers can check what went over
the wire, e.g. that every object was written with a single PUT.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (/\S*) HTTP/')
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 with its request log in a file."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._fh = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    @property
    def env(self) -> dict[str, str]:
        """The environment that points boto3 and pyarrow at this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def requests(self, bucket: str) -> list[tuple[str, str]]:
        """(method, key with query) of every request on ``bucket`` so far, in order."""
        out = []
        for line in self.log.read_text().splitlines():
            m = REQUEST.search(line)
            if m and m.group(2).startswith(f"/{bucket}/"):
                out.append((m.group(1), m.group(2)[len(bucket) + 2 :]))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()
