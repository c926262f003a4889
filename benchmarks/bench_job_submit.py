"""Job-submission overhead: seconds from `ray job submit` to the first unit done, against a direct driver.

Starts a local head node (`ray start --head`, dashboard and job server) in its own temp dir, builds
synthetic SA-1B shards, and runs the `images` + `sa1b` stages three ways, each into a fresh output:

* direct: `grand-engine run --address HEAD` launched as a process on this machine (the baseline);
* job: `ray job submit --working-dir . -- grand-engine run …` (upload, job supervisor, driver start);
* resubmit: the same job again on the finished output (nothing to do: the pure fixed cost).

For each it prints the seconds from launch to the first manifest record, to the first unit with every
stage recorded, and to the end. The difference between job and direct is the submission overhead.

    python benchmarks/bench_job_submit.py --units 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from common import ROOT, header

from tests.conftest import write_sa1b_tar
from tests.runtime.local_cluster import LocalCluster

STAGES = ("images", "sa1b")


def progress(out: Path) -> tuple[int, int]:
    """(manifest records, units with every stage recorded) under ``out``."""
    base = out / "_manifests"
    if not base.exists():
        return 0, 0
    per_unit = Counter(p.relative_to(base).parts[1:] for p in base.rglob("*.json"))
    return sum(per_unit.values()), sum(1 for n in per_unit.values() if n == len(STAGES))


def job_status(cluster: LocalCluster, submission_id: str) -> str:
    try:
        with urllib.request.urlopen(f"{cluster.dashboard}/api/jobs/{submission_id}", timeout=5) as resp:
            return json.load(resp).get("status", "")
    except OSError:
        return ""


def measure(name: str, cmd: list[str], cluster: LocalCluster, out: Path, submission_id: str | None) -> float:
    """Run ``cmd`` to its end; print and return the seconds from launch to the first unit done."""
    already = progress(out)[0] > 0  # a resubmission: only its end time means something
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first_record = first_unit = None
    while True:
        records, units = progress(out)
        now = time.perf_counter() - start
        if records and first_record is None and not already:
            first_record = now
        if units and first_unit is None and not already:
            first_unit = now
        finished = proc.poll() is not None
        if submission_id is not None:
            finished = finished and job_status(cluster, submission_id) in ("SUCCEEDED", "FAILED", "STOPPED")
        if finished:
            break
        time.sleep(0.05)
    end = time.perf_counter() - start
    log = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0 or (submission_id and job_status(cluster, submission_id) != "SUCCEEDED"):
        print(log[-3000:])
        raise SystemExit(f"{name} failed")

    def fmt(value: float | None) -> str:
        return f"{value:8.2f}" if value is not None else f"{'-':>8}"

    print(f"{name:<10} {fmt(first_record)} {fmt(first_unit)} {end:8.2f}   records: {progress(out)[0]}")
    return first_unit if first_unit is not None else end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=8, help="work units (16 images each; default 8)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of direct/job/resubmit (default 2)")
    args = parser.parse_args()
    header("bench_job_submit")
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        root = Path(tmp)
        shards = root / "shards"
        shards.mkdir()
        for s in range(args.units):
            write_sa1b_tar(shards / f"sa_{s:06d}.tar", [(f"sa_{s * 100 + i}", 64, 48) for i in range(16)])
        manifest = root / "bench.yaml"
        manifest.write_text("name: bench\nunit_size: 16\nstages:\n  images: {}\n  sa1b: {}\n")

        cluster = LocalCluster(root)
        try:
            t0 = time.perf_counter()
            cluster.start_head(num_cpus=2)
            print(
                f"head node with dashboard up in {time.perf_counter() - t0:.1f} s; {args.units} units of 16 images\n"
            )
            print(f"{'how':<10} {'1st rec':>8} {'1st unit':>8} {'end':>8}   (seconds from launch)")

            def run_cmd(out: Path) -> list[str]:
                cmd = ["grand-engine", "run", "--shards", str(shards), "--out", str(out), "--manifest", str(manifest)]
                return [*cmd, "--no-progress"]

            overheads = []
            for r in range(args.repeat):
                direct, job = root / f"direct{r}", root / f"job{r}"
                direct_cmd = [*run_cmd(direct), "--address", cluster.address]
                first_direct = measure("direct", direct_cmd, cluster, direct, None)
                job_cmd = cluster.submit_command(*run_cmd(job), submission_id=f"b{r}", wait=False)
                first_job = measure("job", job_cmd, cluster, job, f"b{r}")
                again_cmd = cluster.submit_command(*run_cmd(job), submission_id=f"b{r}-again", wait=False)
                measure("resubmit", again_cmd, cluster, job, f"b{r}-again")
                overheads.append(first_job - first_direct)
            diffs = ", ".join(f"{o:+.2f} s" for o in overheads)
            print(f"\njob submission overhead (job minus direct driver, to the first unit done): {diffs}")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
