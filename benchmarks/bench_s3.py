"""Object-store write throughput of the output store, against a local S3-compatible server (moto).

Starts ``moto``'s server on 127.0.0.1, then writes objects through ``OutputStore`` the way a run does:
small JSON manifest records one after another (the driver's commit rate), unit tables of a few sizes
from 1 and from 4 threads (Ray workers write in parallel), and objects above pyarrow's part size (the
multipart path). Prints objects/s and MB/s for each, with a local-disk baseline through the same API.
moto is a Python server, so these figures bound the engine's own overhead on this machine; they are not
a prediction for AWS S3 or MinIO.

    python benchmarks/bench_s3.py                       # ~1 minute
    python benchmarks/bench_s3.py --total-mb 256 --threads 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import header

from grand_engine.io.store import OutputStore
from tests.io.s3_server import MotoServer


def timed_writes(store: OutputStore, size: int, count: int, threads: int, prefix: str) -> tuple[float, int]:
    """Write ``count`` objects of ``size`` random bytes; return (seconds, requests)."""
    payloads = [os.urandom(size) for _ in range(min(count, 8))]

    def one(i: int) -> None:
        store.write_bytes(f"{prefix}/u{i // 128:03d}/{i % 128:05d}.bin", payloads[i % len(payloads)])

    start = time.perf_counter()
    if threads == 1:
        for i in range(count):
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(count)))
    return time.perf_counter() - start, count


def timed_reads(store: OutputStore, prefix: str, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        store.read_bytes(f"{prefix}/u{i // 128:03d}/{i % 128:05d}.bin")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-mb", type=float, default=64, help="data written per table-size row (default 64)")
    parser.add_argument("--threads", type=int, default=4, help="writer threads for the parallel rows (default 4)")
    parser.add_argument("--records", type=int, default=300, help="manifest records to commit (default 300)")
    args = parser.parse_args()
    header("bench_s3")
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        server = MotoServer(Path(tmp) / "requests.log")
        try:
            os.environ.update(server.env)
            import boto3

            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            boto3.client("s3").create_bucket(Bucket=bucket)
            stores = {"s3 (moto)": OutputStore(f"s3://{bucket}/bench"), "local disk": OutputStore(Path(tmp) / "out")}
            print(f"moto server {server.endpoint}; {args.total_mb:g} MB per size row; {args.threads} threads\n")
            print(f"{'store':<11} {'workload':<38} {'objects':>8} {'seconds':>8} {'objects/s':>10} {'MB/s':>8}")
            for label, store in stores.items():
                store.check_writable()
                rows = [("manifest records (500 B), 1 thread", 500, args.records, 1)]
                for size in (64 * 1024, 1024 * 1024, 8 * 1024 * 1024):
                    count = max(2, int(args.total_mb * 1024 * 1024 // size))
                    for threads in (1, args.threads):
                        rows.append((f"{size // 1024} KB tables, {threads} thread(s)", size, count, threads))
                rows.append(("32 MB objects (S3: multipart), 1 thread", 32 * 1024 * 1024, 2, 1))
                for n, (name, size, count, threads) in enumerate(rows):
                    seconds, objects = timed_writes(store, size, count, threads, f"w{n}")
                    mb = size * objects / 1e6
                    print(
                        f"{label:<11} {name:<38} {objects:>8} {seconds:>8.2f} {objects / seconds:>10.1f} "
                        f"{mb / seconds:>8.1f}"
                    )
                read_count = max(2, int(args.total_mb * 1024 * 1024 // (1024 * 1024)))
                seconds = timed_reads(store, "w3", read_count)
                print(
                    f"{label:<11} {'1024 KB tables read back, 1 thread':<38} {read_count:>8} {seconds:>8.2f} "
                    f"{read_count / seconds:>10.1f} {read_count * 1.048576 / seconds:>8.1f}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
