"""The output store and whole runs on an S3-compatible object store (moto's server on 127.0.0.1).

The server runs as its own process on a free port for this module; its request log is how the tests see
what went over the wire (one PUT per object, data before its manifest record).
"""

from __future__ import annotations

import os
import re
import time
import uuid

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grand_engine.config import load_manifest
from grand_engine.io.store import OutputStore, StoreError
from grand_engine.runtime.lock import OutputLock, OutputLockedError, read_lock
from grand_engine.runtime.manifests import data_path, manifest_path
from grand_engine.runtime.records import invalidate, read_record
from grand_engine.runtime.run import run
from tests.io.s3_server import MotoServer
from tests.runtime.stages_for_tests import executions


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "requests.log")
    yield server
    server.stop()


@pytest.fixture
def s3_env(moto_server, monkeypatch) -> dict[str, str]:
    env = moto_server.env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def bucket(s3_env) -> str:
    name = f"ge-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def _keys(bucket: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _wait_for(predicate, timeout: float = 5.0) -> None:
    """The server logs a request as it answers it; give the last log lines a moment to land."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_store_reads_writes_lists_and_deletes_on_s3(bucket):
    store = OutputStore(f"s3://{bucket}/run1")
    assert not store.is_local
    store.check_writable()
    store.write_text("a/b/c.json", '{"x": 1}')
    store.write_text("a/d.json", "{}")
    store.write_text("a/e.parquet.txt", "not json")
    table = pa.table({"image_id": ["a", "b"], "v": [1, 2]})
    size = store.write_table("t/sa_000000/00000.parquet", table)

    assert store.read_text("a/b/c.json") == '{"x": 1}'
    assert store.read_table("t/sa_000000/00000.parquet").equals(table)
    head = boto3.client("s3").head_object(Bucket=bucket, Key="run1/t/sa_000000/00000.parquet")
    assert head["ContentLength"] == size
    assert list(store.list_files("a", ".json")) == ["a/b/c.json", "a/d.json"]
    assert list(store.list_files("missing", ".json")) == []
    assert store.exists("a/d.json") and not store.exists("a/nope.json")
    with pytest.raises(FileNotFoundError):
        store.read_text("a/nope.json")
    assert store.delete("a/d.json") and not store.delete("a/d.json")
    assert list(store.list_files("a", ".json")) == ["a/b/c.json"]
    assert store.remove_orphans() == 0  # no temporary names on object stores
    assert not [k for k in _keys(bucket) if "_probe" in k or ".tmp-" in k]


def test_every_object_is_written_with_one_put(bucket, moto_server):
    store = OutputStore(f"s3://{bucket}/p")
    small = pa.table({"image_id": [f"sa_{i}" for i in range(200)], "v": list(range(200))})
    store.write_table("stage/sa_000000/00000.parquet", small)
    store.write_text("_manifests/stage/sa_000000/00000.json", '{"status": "done"}')
    store.write_bytes("blob.bin", os.urandom(3 * 1024 * 1024))
    keys = ["p/stage/sa_000000/00000.parquet", "p/_manifests/stage/sa_000000/00000.json", "p/blob.bin"]

    def writes() -> list[tuple[str, str]]:
        return [r for r in moto_server.requests(bucket) if r[0] in ("PUT", "POST")]

    _wait_for(lambda: len(writes()) >= 3)
    assert writes() == [("PUT", k) for k in keys]  # no multipart create/upload-part/complete requests


def test_unwritable_bucket_names_the_path(s3_env):
    store = OutputStore(f"s3://ge-no-such-bucket-{uuid.uuid4().hex[:8]}/x")
    with pytest.raises(StoreError, match="ge-no-such-bucket"):
        store.check_writable()


def test_run_to_s3_writes_data_before_manifests_and_resumes(bucket, moto_server, shards, test_manifest, tmp_path):
    manifest_file, log = test_manifest()
    manifest = load_manifest(manifest_file)
    uri = f"s3://{bucket}/grand"
    plan, summary = run(manifest, [str(shards)], uri, backend="inline", progress=False)
    assert summary.ok and summary.units_done == 4 and summary.images == 8

    # same tables as a local run
    local = tmp_path / "local"
    run(manifest, [str(shards)], str(local), backend="inline", progress=False)
    store = OutputStore(uri)
    pairs = [(s, u.unit_id) for u in plan.units for s in plan.pipeline.order]
    for stage, unit_id in pairs:
        assert store.read_table(data_path(stage, unit_id)).equals(pq.read_table(local / data_path(stage, unit_id)))

    # one PUT per key, and each table's PUT comes before its manifest record's PUT
    _wait_for(lambda: sum(m == "PUT" and "/_manifests/" in k for m, k in moto_server.requests(bucket)) >= 16)
    requests = moto_server.requests(bucket)
    puts = [k for m, k in requests if m == "PUT"]
    assert not [k for m, k in requests if m == "POST"]
    for stage, unit_id in pairs:
        data_key, record_key = f"grand/{data_path(stage, unit_id)}", f"grand/{manifest_path(stage, unit_id)}"
        assert puts.count(data_key) == 1 and puts.count(record_key) == 1
        assert puts.index(data_key) < puts.index(record_key), (stage, unit_id)
    assert read_lock(store) is None  # released at the end

    # a rerun resumes: nothing executes
    log.unlink()
    _, again = run(manifest, [str(shards)], uri, backend="inline", progress=False)
    assert executions(log) == [] and again.units_skipped == 4

    # the records were compacted to one file per shard, and the per-pair files removed
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="grand/_manifests/")["Contents"]
    keys = {o["Key"] for o in listed if not o["Key"].endswith("/")}  # pyarrow leaves empty folder markers
    assert keys == {"grand/_manifests/_shards/sa_000000.arrow", "grand/_manifests/_shards/sa_000001.arrow"}

    # invalidating one record reruns exactly that pair
    unit_id = plan.units[2].unit_id
    assert invalidate(store, "t_double", unit_id)
    _, third = run(manifest, [str(shards)], uri, backend="inline", progress=False)
    assert executions(log) == [("t_double", unit_id)] and third.executed == [("t_double", unit_id)]

    # a table deleted from the bucket is noticed by the planner (one listing per stage) and recomputed
    log.unlink()
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"grand/{data_path('t_area', unit_id)}")
    _, fourth = run(manifest, [str(shards)], uri, backend="inline", progress=False)
    assert executions(log) == [("t_area", unit_id)] and fourth.executed == [("t_area", unit_id)]


def test_lock_on_s3_refuses_a_second_driver(bucket):
    store = OutputStore(f"s3://{bucket}/locked")
    first = OutputLock(store, settle_s=0.1).acquire()
    try:
        with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()}.*--force-unlock"):
            OutputLock(store, settle_s=0.1).acquire()
    finally:
        first.release()
    assert read_lock(store) is None
    second = OutputLock(store, settle_s=0.1).acquire()
    second.release()


@pytest.mark.slow
def test_ray_workers_write_to_s3_configured_by_the_uri_alone(
    ray_cluster, moto_server, shards, test_manifest, monkeypatch
):
    """On Ray the workers build the store from its URI: endpoint, region and credentials can all travel in
    it (`s3://KEY:SECRET@bucket/prefix?endpoint_override=…`), without environment on the workers."""
    for key in [*moto_server.env, "AWS_PROFILE"]:
        monkeypatch.delenv(key, raising=False)
    bucket = f"ge-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_server.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    uri = f"s3://testing:testing@{bucket}/ray?endpoint_override=127.0.0.1:{moto_server.port}&scheme=http&region=us-east-1"
    manifest_file, log = test_manifest()
    plan, summary = run(load_manifest(manifest_file), [str(shards)], uri, backend="ray", progress=False)
    assert summary.ok and summary.units_done == 4
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert [k for k in keys if k.startswith("ray/_manifests/") and not k.endswith("/")] == [
        "ray/_manifests/_shards/sa_000000.arrow",
        "ray/_manifests/_shards/sa_000001.arrow",
    ]
    assert sum(k.startswith("ray/t_pixels/") for k in keys) == 4
    record = vars(read_record(OutputStore(uri), "t_pixels", "sa_000001/00001"))
    assert re.fullmatch(r"[^/]+/[0-9a-f]{12}", record["host"])  # written by a Ray worker, which names its node
    _wait_for(lambda: sum(m == "PUT" and "/_manifests/" in k for m, k in moto_server.requests(bucket)) >= 16)
    assert not [k for m, k in moto_server.requests(bucket) if m == "POST"]  # one PUT per object from workers too
