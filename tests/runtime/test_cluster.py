"""Cluster scale on one machine: real `ray start` nodes, `ray job submit`, custom-resource placement.

The module starts its own two-node Ray cluster (:class:`tests.runtime.local_cluster.LocalCluster`: a
head with the dashboard and job server, and a worker node carrying a fake ``accel`` resource) as
separate processes in their own temp dir, so it never meets the session's in-process ``ray_cluster``
(`ray.init()` without an address looks for a cluster in the default temp dir only). Drivers run as
subprocesses.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grand_engine.config import ConfigError, load_manifest
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import data_path, errors_path
from grand_engine.runtime.ray_backend import check_custom_resources, custom_resources, segments
from grand_engine.runtime.records import read_records
from grand_engine.runtime.run import run
from tests.runtime.local_cluster import REPO, LocalCluster
from tests.runtime.stages_for_tests import AreaStage, DoubleStage, PixelStage


# -- fast checks of the pieces (no cluster) ---------------------------------------------------------
def test_custom_resource_stages_get_their_own_pool():
    stages = {
        "images": AreaStage.configure(),
        "t_area": AreaStage.configure(resources={"custom": {"accel": 1}}),
        "t_double": DoubleStage.configure(),
        "t_pixels": PixelStage.configure(),
        "t_more": PixelStage.configure(resources={"custom": {"accel": 0.5, "fast_disk": 1}}),
    }
    assert segments(list(stages), stages) == [["images"], ["t_area"], ["t_double", "t_pixels"], ["t_more"]]
    assert custom_resources({"a": stages["t_area"], "b": stages["t_more"]}) == {"accel": 1.0, "fast_disk": 1.0}


def test_missing_custom_resource_fails_before_any_work():
    stages = {"t_area": AreaStage.configure(resources={"custom": {"accel": 2}})}
    check_custom_resources(stages, {"CPU": 4.0, "accel": 2.0})
    with pytest.raises(
        ConfigError,
        match=r"'accel' \(asked by \['t_area'\]\) not available .*custom resources: \{'accel': 1.0, 'other': 1.0\}\)",
    ):
        check_custom_resources(stages, {"CPU": 4.0, "accel": 1.0, "other": 1.0, "node:10.0.0.1": 1.0})


def test_custom_resources_from_manifest_and_set(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nstages:\n  images: {}\n  t_area: {resources: {custom: {accel: 1}}}\n")
    manifest = load_manifest(path, overrides=["t_area.resources.custom.fast_disk=2"])
    assert manifest.stages["t_area"].resources.custom == {"accel": 1.0, "fast_disk": 2.0}
    dropped = load_manifest(path, overrides=["t_area.resources.custom.accel=0"])
    stage = AreaStage.configure(resources=dropped.stages["t_area"].resources.overrides())
    assert stage.resources.custom == {}
    path.write_text("name: m\nstages:\n  images: {}\n  t_area: {resources: {custom: {accel: -1}}}\n")
    with pytest.raises(ConfigError, match="custom resource amounts must be >= 0"):
        load_manifest(path)
    with pytest.raises(ValueError, match="may not be named"):
        AreaStage.configure(resources={"custom": {"GPU": 1}})


# -- the local two-node cluster -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head: 4 logical CPUs. Worker: 1 CPU and one `accel` (a stand-in for a GPU type)."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        local.start_head(num_cpus=4)
        local.add_node(num_cpus=1, resources={"accel": 1})
        yield local
    finally:
        local.stop()


def _submit(cluster: LocalCluster, submission_id: str, *entrypoint: str) -> subprocess.CompletedProcess:
    cmd = cluster.submit_command(*entrypoint, submission_id=submission_id)
    return subprocess.run(cmd, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=300)


def _records(out: Path) -> dict[tuple[str, str], str]:
    """The committed records, per-pair and compacted alike: (stage, unit) -> the record's JSON."""
    return {(r.stage, r.unit_id): r.to_json() for r in read_records(OutputStore(out))}


@pytest.mark.slow
def test_job_submission_runs_and_a_resubmitted_job_resumes(cluster, shards, tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text("name: job\nunit_size: 2\nstages:\n  images: {}\n  sa1b: {}\n")
    out = tmp_path / "out"
    run_cmd = ["grand-engine", "run", "--shards", str(shards), "--out", str(out), "--manifest", str(manifest)]
    run_cmd.append("--no-progress")

    first = _submit(cluster, "ge-job-1", *run_cmd, "--max-units", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "units: 2 total, 2 done, 0 already done, 0 failed" in first.stdout
    assert "Job 'ge-job-1' succeeded" in first.stdout + first.stderr
    after_first = _records(out)
    assert len(after_first) == 4  # images and sa1b for 2 units

    # The upload is the source tree: no virtualenv, caches, build outputs or data.
    packages = list(Path(cluster.temp_dir).glob("session_latest/runtime_resources/working_dir_files/_ray_pkg_*"))
    uploaded = [p for p in packages if p.is_dir()]
    assert len(uploaded) == 1, packages
    names = {p.name for p in uploaded[0].iterdir()}
    assert {"grand_engine", "manifests", "prompts", "pyproject.toml", "setup.py"} <= names
    assert not names & {".venv", ".git", "build", ".hypothesis", ".pytest_cache", ".ruff_cache", "demo_out"}
    size = sum(f.stat().st_size for f in uploaded[0].rglob("*") if f.is_file())
    assert size < 20 * 1024 * 1024, f"working dir upload is {size / 1e6:.1f} MB"

    # Resubmitting the whole run resumes: the two units already done are skipped, their records kept.
    second = _submit(cluster, "ge-job-2", *run_cmd)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "units: 4 total, 2 done, 2 already done, 0 failed" in second.stdout
    after_second = _records(out)
    assert len(after_second) == 8
    assert {k: after_second[k] for k in after_first} == after_first

    # The job's driver ran on the head and released the output's lock.
    assert not (out / "_lock.json").exists()
    hosts = {r.host for r in read_records(OutputStore(out))}
    assert all(re.fullmatch(r"[^/]+/[0-9a-f]{12}", h) for h in hosts), hosts


MULTI_NODE_MANIFEST = """
name: multinode
unit_size: 2
stages:
  images: {{resources: {{cpus: 1.5}}}}
  t_area: {{params: {{log: {log}, fail_image: sa_11}}, resources: {{cpus: 0.5, custom: {{accel: 1}}}}}}
  t_double: {{params: {{log: {log}}}, resources: {{cpus: 1.5}}}}
  t_pixels: {{params: {{log: {log}}}}}
"""


@pytest.mark.slow
def test_stages_asking_for_a_custom_resource_run_on_the_node_that_has_it(cluster, shards, tmp_path):
    """`t_area` asks for `accel` and runs on the worker node; the CPU pools (1.5 CPUs each) do not fit
    the worker's single CPU and run on the head. Tables are identical to a single-node inline run."""
    manifest = tmp_path / "multinode.yaml"
    manifest.write_text(textwrap.dedent(MULTI_NODE_MANIFEST.format(log=tmp_path / "executions.log")))
    out = tmp_path / "cluster_out"
    argv = ["run", "--shards", str(shards), "--out", str(out), "--manifest", str(manifest), "--no-progress"]
    argv += ["--address", cluster.address]
    code = f"import sys, tests.runtime.stages_for_tests; from grand_engine.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "units: 4 total, 4 done" in proc.stdout

    nodes = cluster.nodes_info()
    head = next(n["node_id"][:12] for n in nodes if n["is_head_node"])
    accel = next(n["node_id"][:12] for n in nodes if n["resources_total"].get("accel"))
    records = read_records(OutputStore(out))
    assert len(records) == 16
    placement = {(r.stage, r.unit_id): r.host.rsplit("/", 1)[1] for r in records}
    for (stage, unit_id), node in placement.items():
        assert node == (accel if stage == "t_area" else head), (stage, unit_id, node)

    single = tmp_path / "single_out"
    plan, summary = run(load_manifest(manifest), [str(shards)], str(single), backend="inline", progress=False)
    assert summary.ok and summary.error_rows == 1
    for unit in plan.units:
        for stage in plan.pipeline.order:
            a = pq.read_table(out / data_path(stage, unit.unit_id))
            b = pq.read_table(single / data_path(stage, unit.unit_id))
            assert a.equals(b), (stage, unit.unit_id)
    err = errors_path("t_area", "sa_000001/00000")
    assert pq.read_table(out / err).equals(pq.read_table(single / err))
