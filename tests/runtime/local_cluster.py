"""A local multi-node Ray cluster of real `ray start` processes, for tests and benchmarks.

Every node is a `ray start --block` process in its own session, with its own temp dir, so `ray.init()`
without an address elsewhere (which only looks in the default temp dir) never joins it, and `stop()`
kills exactly the processes the nodes spawned. Token authentication is switched off: the cluster
listens on this machine only and lives for one test module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


class LocalCluster:
    """A head node (dashboard + job server) and worker nodes, each a `ray start --block` process."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="ge-ray-", dir="/tmp")
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO),  # workers import the t_* test stages
            "RAY_AUTH_MODE": "disabled",  # a throwaway cluster on 127.0.0.1; see docs/cluster.md for tokens
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.update(extra_env or {})
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[subprocess.Popen] = []
        self.dashboard_port = free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.address = ""

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")
        cmd = [str(BIN / "ray"), "start", "--block", "--temp-dir", self.temp_dir, "--disable-usage-stats"]
        cmd += ["--object-store-memory", str(150 * 1024 * 1024), "--dashboard-agent-listen-port", str(free_port())]
        self.nodes.append(
            subprocess.Popen(cmd + args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        log.close()

    def start_head(self, num_cpus: int) -> None:
        self._start(
            "head",
            ["--head", "--port", "0", "--num-cpus", str(num_cpus), "--include-dashboard", "true"]
            + ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port)]
            + ["--ray-client-server-port", str(free_port())],
        )
        address_file = Path(self.temp_dir) / "ray_current_cluster"
        self._wait(lambda: address_file.exists() and address_file.read_text().strip(), "head node address")
        self.address = address_file.read_text().strip()
        self._wait(lambda: self.nodes_info() is not None, "dashboard")

    def add_node(self, num_cpus: int, resources: dict[str, float]) -> None:
        before = len(self.nodes_info() or [])
        self._start(
            f"node{len(self.nodes)}",
            ["--address", self.address, "--num-cpus", str(num_cpus), "--resources", json.dumps(resources)],
        )
        self._wait(lambda: len(self.nodes_info() or []) > before, "worker node")

    def nodes_info(self) -> list[dict] | None:
        """Alive nodes from the dashboard's state API (``None`` while it is not up)."""
        try:
            with urllib.request.urlopen(f"{self.dashboard}/api/v0/nodes?limit=100", timeout=5) as resp:
                data = json.load(resp)
        except (OSError, ValueError, urllib.error.HTTPError):
            return None
        return [n for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def _wait(self, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p for p in self.nodes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-1500:] for p in sorted(self.root.glob("*.log")))
                raise RuntimeError(f"local Ray cluster: {what} did not come up\n{logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Kill every node's process group, then whatever else its session spawned (worker processes)."""
        sessions = {p.pid for p in self.nodes}
        for proc in self.nodes:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = [int(p) for p in os.listdir("/proc") if p.isdigit() and _session_of(p) in sessions]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def submit_command(self, *entrypoint: str, submission_id: str | None = None, wait: bool = True) -> list[str]:
        """`ray job submit --working-dir .` (run it from the repository root), as a user types it."""
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--working-dir", "."]
        if submission_id:
            cmd += ["--submission-id", submission_id]
        if not wait:
            cmd.append("--no-wait")
        return [*cmd, "--", *entrypoint]
