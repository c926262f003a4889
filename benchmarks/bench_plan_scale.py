"""Planning a finished run at GranD's scale: 11M images in units of 128 (86,000 units), every stage of grand.yaml.

A finished run is laid out as the driver leaves it: every shard's cached index summary, its records compacted into
one file per shard, and one table per (stage, unit) (empty files with their recorded size of 0, since only their
presence and size are checked when planning). Then ``make_plan`` must find nothing to do. Two stores:

* **local disk** — a temporary folder (target: under 10 s);
* **object store** — ``benchmarks/s3_latency_server.py`` (an S3-compatible server in a process of its own, objects
  in memory) with ``--latency-ms`` (20 ms) added to every request (target: under 60 s). The requests are counted.

The shard files themselves are empty placeholders (their summaries are cached, so planning never opens them).

    .venv/bin/python benchmarks/bench_plan_scale.py [--units 86000] [--units-per-shard 86] [--latency-ms 20]
        [--stores local s3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from common import header

from grand_engine.config import load_manifest
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import StageRecord, data_path
from grand_engine.runtime.pipeline import build_pipeline
from grand_engine.runtime.plan import INDEX, make_plan
from grand_engine.runtime.records import compact_path, records_table, write_compacted

UNIT_SIZE = 128


def make_shards(shards: Path, units: int, per_shard: int) -> None:
    """The placeholder shard files (empty: their summaries are cached, so planning never opens them)."""
    for s in range(-(-units // per_shard)):
        (shards / f"sa_{s:06d}.tar").write_bytes(b"")


def layout(pipeline, shards: Path, units: int, per_shard: int) -> dict[str, bytes]:
    """Every object of a finished run over the shards of :func:`make_shards` (relative path → bytes)."""
    objects: dict[str, bytes] = {}
    n_shards = -(-units // per_shard)
    store = OutputStore(tempfile.mkdtemp())  # only to serialise records the way the driver does
    for s in range(n_shards):
        name = f"sa_{s:06d}"
        path = shards / f"{name}.tar"
        st = path.stat()
        count = min(per_shard, units - s * per_shard)
        identity = f"{s:012x}"
        summary = {
            "path": str(path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "input": "images",
            "shard": name,
            "identity": identity,
            "members": count * UNIT_SIZE,
        }
        objects[f"{INDEX}/{name}.summary.json"] = json.dumps(summary).encode()
        records = []
        for n in range(count):
            unit_id = f"{name}/{n:05d}"
            for stage in pipeline.order:
                out = data_path(stage, unit_id)
                objects[out] = b""
                records.append(
                    StageRecord(
                        stage=stage,
                        unit_id=unit_id,
                        fingerprint=f"{pipeline.fingerprints[stage]}-{identity}",
                        status="done",
                        rows=UNIT_SIZE,
                        images=UNIT_SIZE,
                        output=out,
                        bytes=0,
                    )
                )
        rel = compact_path(name)
        write_compacted(store, name, records_table(records))
        objects[rel] = Path(store.full(rel)).read_bytes()
    return objects


def plan_once(pipeline, shards: Path, uri: str) -> tuple[str, int, int]:
    """Plan once; the wall time and this process's CPU time (the machine is shared: CPU time travels better)."""
    start, cpu = time.perf_counter(), time.process_time()
    plan = make_plan(pipeline, [str(shards)], OutputStore(uri), UNIT_SIZE)
    seconds = f"{time.perf_counter() - start:.2f} s wall ({time.process_time() - cpu:.2f} s CPU)"
    return seconds, len(plan.units), plan.pairs_todo()


def serve(manifest: str, shards: str, units: int, per_shard: int, latency_s: float, conn) -> None:  # noqa: ANN001
    """The object store's process: lay the run out in its memory, serve it, report request counts on demand."""
    from s3_latency_server import LatencyS3

    pipeline = build_pipeline(load_manifest(manifest))
    server = LatencyS3(latency_s=latency_s).start()
    server.bucket("grand").put_many(
        {f"run/{rel}": data for rel, data in layout(pipeline, Path(shards), units, per_shard).items()}
    )
    conn.send(server.endpoint)
    while (message := conn.recv()) != "stop":
        if message == "counts":
            conn.send(dict(server.counts))
        elif message == "clear":
            server.counts.clear()
            conn.send("ok")
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=86_000)
    parser.add_argument("--units-per-shard", type=int, default=86, help="SA-1B: ~11,000 images a tar = 86 units")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--stores", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--manifest", default="grand")
    args = parser.parse_args()
    header("plan a finished run at scale")
    pipeline = build_pipeline(load_manifest(args.manifest))
    work = Path(tempfile.mkdtemp(prefix="plan-scale-"))
    shards = work / "shards"
    shards.mkdir()
    make_shards(shards, args.units, args.units_per_shard)
    n_records = args.units * len(pipeline.order)
    print(
        f"{args.units} units × {len(pipeline.order)} stages = {n_records} records in {-(-args.units // args.units_per_shard)} shards"
    )
    if "local" in args.stores:
        t0 = time.perf_counter()
        out = work / "out"
        for rel, data in layout(pipeline, shards, args.units, args.units_per_shard).items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
        print(f"local disk: laid out in {time.perf_counter() - t0:.0f} s")
        for attempt in ("first", "second"):
            seconds, units, todo = plan_once(pipeline, shards, str(out))
            print(f"local disk, {attempt} plan: {seconds} for {units} units, {todo} (stage, unit) pairs to do")
    if "s3" in args.stores:
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        args_ = (args.manifest, str(shards), args.units, args.units_per_shard, args.latency_ms / 1000, theirs)
        server = context.Process(target=serve, args=args_, daemon=True)
        server.start()
        endpoint = mine.recv()
        os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"})
        uri = f"s3://grand/run?endpoint_override={endpoint}&scheme=http"
        for attempt in ("first", "second"):
            mine.send("clear")
            mine.recv()
            seconds, units, todo = plan_once(pipeline, shards, uri)
            mine.send("counts")
            requests = ", ".join(f"{k} {v}" for k, v in sorted(mine.recv().items()))
            print(
                f"object store ({args.latency_ms:g} ms a request), {attempt} plan: {seconds} for {units} units, "
                f"{todo} pairs to do; requests: {requests}"
            )
        mine.send("stop")
        server.join(timeout=30)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
