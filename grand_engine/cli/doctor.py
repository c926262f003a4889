"""``grand-engine doctor``: is this machine ready to run a manifest? One line per check, with the fix.

Checks, in order: Python, torch, CUDA and the GPUs (required when the manifest's stages ask for GPUs and no Ray cluster
is given), Ray (the cluster at ``--address``/``RAY_ADDRESS`` must answer; without one a local Ray starts), vLLM
(required when a model slot uses the ``vllm`` backend), java (for METEOR in ``evaluate gcg``), free disk at the
output folder, and every checkpoint of the manifest (:func:`grand_engine.models.check.check_manifest`). The exit
status is 1 when a required check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from grand_engine.cli.common import parse_vars
from grand_engine.config import ConfigError, load_manifest

OK, INFO, WARN, FAIL = "ok", "info", "warn", "FAIL"
MIN_PYTHON = (3, 10)
"""pyproject's ``requires-python``."""
DISK_FAIL_GIB = 1.0
"""Less free space than this at the output folder fails: even the demo writes tens of MB plus logs."""
DISK_WARN_GIB = 20.0
"""Less than this is worth a warning: a shard of ~11k SA-1B images writes a few GB across all levels."""
RAY_PROBE_S = 60
"""Seconds the Ray cluster has to answer (``ray.init`` retries for minutes on a wrong address)."""
GIB = 1024**3


@dataclass
class Check:
    """One line of the report."""

    status: str  # ok, info, warn or FAIL
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.name:<11} {self.detail}{fix}"


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3]), executable: str = sys.executable) -> Check:
    text = ".".join(map(str, version))
    if tuple(version[:2]) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check(FAIL, "python", f"{text} ({executable})", f"use Python {need} or newer (e.g. `make setup`)")
    return Check(OK, "python", f"{text} ({executable})")


def gpus_asked(pipeline: Any) -> list[str]:
    """The stages of ``pipeline`` that ask for a GPU share."""
    return [name for name, stage in pipeline.stages.items() if stage.resources.gpus > 0]


def check_torch_and_gpus(gpu_stages: list[str], cluster: bool) -> list[Check]:
    """torch's version, then one line on CUDA and the GPUs: a failure when ``gpu_stages`` need a GPU here."""
    try:
        import torch  # heavy: imported only by this command
    except ImportError as exc:
        return [Check(FAIL, "torch", f"not importable: {exc}", "pip install torch (the Makefile pins the build)")]
    checks = [Check(OK, "torch", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")]
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(f"{props.name} {props.total_memory / GIB:.0f} GiB")
    checks.append(gpu_check(devices, gpu_stages, cluster))
    return checks


def gpu_check(devices: list[str], gpu_stages: list[str], cluster: bool) -> Check:
    """The GPU line: ``devices`` found here, the stages that ask for GPUs, whether a Ray cluster runs them."""
    if devices:
        return Check(OK, "gpus", f"{len(devices)}: {', '.join(devices)}")
    if not gpu_stages:
        return Check(INFO, "gpus", "no CUDA GPU here; this manifest's stages all run on CPUs")
    asked = ", ".join(gpu_stages[:6]) + (" …" if len(gpu_stages) > 6 else "")
    if cluster:
        return Check(INFO, "gpus", f"no CUDA GPU here; stages {asked} need the Ray cluster's GPUs")
    return Check(
        FAIL,
        "gpus",
        f"no CUDA GPU here, and stages {asked} ask for GPUs",
        "run on a GPU machine or give --address of a GPU cluster; for a CPU trial use --manifest tiny or "
        "--set STAGE.resources.gpus=0",
    )


def check_ray(address: str | None, probe: Callable[[str], dict[str, float]] | None = None) -> Check:
    """Ray's version; with an address, whether the cluster answers and what it has."""
    if importlib.util.find_spec("ray") is None:
        return Check(FAIL, "ray", "not installed", "pip install 'ray[data,default]'")
    version = metadata.version("ray")
    if not address:
        cpus = os.cpu_count() or 1
        return Check(
            INFO,
            "ray",
            f"{version}; no --address or RAY_ADDRESS: `grand-engine run` starts a local Ray on this machine "
            f"({cpus} CPUs)",
        )
    try:
        resources = (probe or probe_ray)(address)
    except RuntimeError as exc:
        return Check(
            FAIL,
            "ray",
            f"{version}; the cluster at {address} does not answer: {exc}",
            "start it (`ray start --head` on the head node), check the address and port (default 6379), or drop "
            "--address to use a local Ray",
        )
    nodes = int(resources.pop("__nodes__", 0))
    return Check(
        OK,
        "ray",
        f"{version}; cluster at {address}: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, "
        f"{resources.get('GPU', 0):g} GPUs",
    )


_PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
out = dict(ray.cluster_resources())
out["__nodes__"] = len([n for n in ray.nodes() if n.get("Alive")])
print(json.dumps(out))
ray.shutdown()
"""


def probe_ray(address: str, timeout: int = RAY_PROBE_S) -> dict[str, float]:
    """The cluster's resources (and ``__nodes__``), asked in a child process; ``RuntimeError`` when it does not
    answer within ``timeout`` seconds (a closed port fails at once)."""
    host, _, port = address.rpartition(":")
    if "://" not in address and host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise RuntimeError(f"cannot connect to {host}:{port} ({exc.strerror or exc})") from None
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, address], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer within {timeout} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["ray.init failed"])[-1]
        raise RuntimeError(last)
    return json.loads(done.stdout.strip().splitlines()[-1])


def vllm_slots(manifest: Any) -> list[str]:
    """``stage.slot`` of every enabled model slot that uses the vLLM backend."""
    return [
        f"{name}.{slot}"
        for name, stage in manifest.stages.items()
        if stage.enabled
        for slot, spec in stage.models.items()
        if spec.backend == "vllm"
    ]


def check_vllm(slots: list[str], installed: bool | None = None) -> Check:
    installed = importlib.util.find_spec("vllm") is not None if installed is None else installed
    if installed:
        return Check(OK, "vllm", metadata.version("vllm"))
    if slots:
        return Check(
            FAIL,
            "vllm",
            f"not installed; {', '.join(slots)} use the vllm backend",
            "pip install 'grand-engine[vllm]' on the GPU machines, or --set the slots' backend to transformers",
        )
    return Check(INFO, "vllm", "not installed (this manifest does not use it; GPU deployments of `grand` do)")


def check_java(which: Callable[[str], str | None] = shutil.which) -> Check:
    java = which("java")
    if java is None:
        return Check(
            WARN,
            "java",
            "not found: `evaluate gcg` cannot compute METEOR (the pipeline itself does not need it)",
            "apt-get install default-jre-headless (or any Java 8+ on PATH)",
        )
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
        version = (done.stderr or done.stdout).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        return Check(WARN, "java", f"{java} does not run: {exc}", "reinstall Java 8+")
    return Check(OK, "java", f"{version} ({java})")


def check_disk(out: str, usage: Callable[[str], Any] = shutil.disk_usage) -> Check:
    """Free space at the output folder (its nearest existing parent when it does not exist yet)."""
    if "://" in out and not out.startswith("file://"):
        return Check(INFO, "disk", f"{out} is an object store: free space is not checked")
    path = Path(out.removeprefix("file://")).expanduser().resolve()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return Check(
            FAIL, "disk", f"{probe} is not writable", f"choose another --out or fix the permissions of {probe}"
        )
    free = usage(str(probe)).free / GIB
    detail = f"{free:.1f} GiB free at {probe}"
    if free < DISK_FAIL_GIB:
        return Check(FAIL, "disk", detail, "free some space or write to another --out (s3:// works too)")
    if free < DISK_WARN_GIB:
        return Check(WARN, "disk", detail + " (enough for the demo and small runs, not for a full shard set)")
    return Check(OK, "disk", detail)


def checkpoint_checks(manifest: Any) -> list[Check]:
    """One line per checkpoint of the manifest, naming the slots that use it: found (with its size), or missing
    (what was tried, and how to provide it)."""
    from grand_engine.models.check import check_manifest, format_size  # deferred: the model layer is heavy

    slots: dict[tuple[str, str | None], list[Any]] = {}
    for slot in check_manifest(manifest):
        slots.setdefault((slot.spec.id, slot.spec.file), []).append(slot)
    out = []
    for group in slots.values():
        names = ", ".join(f"{s.stage}.{s.slot}" for s in group)
        result = group[0].result
        if result.found:
            size = f" ({format_size(result.bytes)})" if result.bytes else ""
            out.append(Check(OK, "checkpoint", f"{result.where}{size} for {names}"))
        else:
            what, _, how = result.message.partition("; ")  # check_manifest puts how to provide it after "; "
            fix = how or "put it in the local Hugging Face cache or point the slot's id at a local path"
            out.append(Check(FAIL, "checkpoint", f"{what} (for {names})", fix))
    return out


def diagnose(args: argparse.Namespace) -> list[Check]:
    """Every check, in report order."""
    from grand_engine.runtime.pipeline import build_pipeline  # deferred: imports pyarrow, numpy and the stage base

    address = args.address or os.environ.get("RAY_ADDRESS") or None
    checks = [check_python()]
    try:
        manifest = load_manifest(args.manifest, overrides=args.overrides, variables=parse_vars(args.variables))
        pipeline = build_pipeline(manifest)
    except (ConfigError, OSError, ValueError) as exc:
        manifest = pipeline = None
        checks.append(Check(FAIL, "manifest", f"{args.manifest}: {exc}", "fix the manifest or the --set/--var values"))
    checks += check_torch_and_gpus(gpus_asked(pipeline) if pipeline else [], cluster=address is not None)
    checks.append(check_ray(address))
    checks.append(check_vllm(vllm_slots(manifest) if manifest else []))
    checks.append(check_java())
    checks.append(check_disk(args.out))
    if manifest is not None:
        checks += checkpoint_checks(manifest)
    return checks


def run(args: argparse.Namespace) -> int:
    checks = diagnose(args)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.status == FAIL]
    print(f"{len(failed)} required check(s) failed" if failed else f"ready to run the {args.manifest} manifest")
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``grand-engine doctor``."""
    p = sub.add_parser(
        "doctor",
        help="check this machine for a run: Python, torch, GPUs, Ray, vLLM, java, disk and the manifest's checkpoints",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--manifest", default="tiny", help="packaged manifest name or YAML path (default tiny)")
    p.add_argument("--out", default=".", help="the output folder a run would write (its free disk is checked)")
    p.add_argument("--address", default=None, help="a Ray cluster to check (default: RAY_ADDRESS, else none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.PARAM=VALUE")
    p.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(func=run)
