"""Plan and resume: time to plan N work units and to decide that nothing is left to do, for the whole
``--levels 1-4`` pipeline of the tiny manifest (30 stages, so N units mean 30·N manifest records).

For each N (default 1,000 and 10,000 units of ``--unit-size`` images; tiny JPEGs in shards of 1,000 images):

* **first plan** — ``make_plan`` on an empty output: every shard's tar headers are scanned and its index cached,
  every (stage, unit) is found to do.
* **nothing to do** — the same output after every (stage, unit) was recorded done with the current fingerprint
  (the records are written directly, as a finished run would have left them; running 30 stages on 10,000 units
  is not what is measured here): ``make_plan`` reads the cached indexes and one record per (stage, unit).
  In process, median of ``--repeat``; and as a whole ``grand-engine run`` process (interpreter start, imports,
  manifest, fingerprints of the checkpoints, plan) that must print ``0 (stage, unit) tasks to run``.

Target: < 3 s for 1,000 units.

    .venv/bin/python benchmarks/bench_plan.py [--units 1000 10000] [--unit-size 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from common import add_member, build_tiny_checkpoints, child_env, header, tiny_run_command
from PIL import Image


def write_shards(folder: Path, n_images: int, per_shard: int = 1000) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    for s in range(0, n_images, per_shard):
        with tarfile.open(folder / f"sa_{s // per_shard:06d}.tar", "w") as tar:
            for i in range(s, min(s + per_shard, n_images)):
                ann = json.dumps({"image": {"image_id": i, "width": 8, "height": 8}, "annotations": []}).encode()
                add_member(tar, f"sa_{i}.jpg", jpeg)
                add_member(tar, f"sa_{i}.json", ann)


def write_done_records(out: Path, plan) -> int:
    """Record every (stage, unit) of ``plan`` as done with its current fingerprint; returns the count."""
    # deferred, like the imports in main(): the runtime is imported after GRAND_TINY_DIR is set
    from grand_engine.runtime.manifests import StageRecord, manifest_path
    from grand_engine.runtime.plan import unit_fingerprint

    pipeline = plan.pipeline
    count = 0
    made: set[Path] = set()
    for unit in plan.units:
        for name in pipeline.order:
            record = StageRecord(
                stage=name,
                unit_id=unit.unit_id,
                fingerprint=unit_fingerprint(pipeline.fingerprints[name], unit),
                status="done",
                rows=len(unit.members),
                images=len(unit.members),
                output=f"{name}/{unit.unit_id}.parquet",
                seconds=0.1,
                host="bench",
                engine_version="0.1.0",
                finished_at="2026-01-01T00:00:00Z",
            )
            path = out / manifest_path(name, unit.unit_id)
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_text(json.dumps(asdict(record), sort_keys=True))
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--unit-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    header("bench_plan")
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        # The command checks that every checkpoint exists before it plans: build the tiny ones (and digest them
        # into the fingerprints, as a real no-op run does).
        tiny = str(Path(tmp) / "models" / "tiny")
        os.environ["GRAND_TINY_DIR"] = tiny
        env = child_env()
        build_tiny_checkpoints(tiny, env)
        variables = {"llm_dir": f"{tiny}/llama"}

        # deferred: imported once GRAND_TINY_DIR points at the checkpoints just built
        from grand_engine.config import load_manifest
        from grand_engine.io.store import OutputStore
        from grand_engine.runtime.pipeline import build_pipeline, parse_levels
        from grand_engine.runtime.plan import make_plan

        manifest = load_manifest("tiny", variables=variables)
        pipeline = build_pipeline(manifest, levels=parse_levels("1-4"))
        print(f"pipeline: tiny manifest, levels 1-4, {len(pipeline.order)} stages; unit size {args.unit_size}")
        print(
            f"{'units':>6} {'records':>8} {'first plan s':>13} {'nothing to do s':>16} {'no-op CLI s':>12}   "
            "target < 3 s at 1,000 units"
        )
        for n in args.units:
            root = Path(tmp) / f"n{n}"
            shards, out = root / "shards", root / "out"
            shards.mkdir(parents=True)
            write_shards(shards, n * args.unit_size)
            start = time.perf_counter()
            plan = make_plan(pipeline, [str(shards)], OutputStore(out), unit_size=args.unit_size)
            first = time.perf_counter() - start
            assert len(plan.units) == n and plan.pairs_todo() == n * len(pipeline.order), plan.pairs_todo()
            records = write_done_records(out, plan)
            warm = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                again = make_plan(pipeline, [str(shards)], OutputStore(out), unit_size=args.unit_size)
                warm.append(time.perf_counter() - start)
                assert again.pairs_todo() == 0, again.pairs_todo()
            cmd = tiny_run_command(shards, out, tiny, "--unit-size", str(args.unit_size))
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
            whole = time.perf_counter() - start
            if proc.returncode != 0 or "0 (stage, unit) tasks to run" not in proc.stdout:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
                return 1
            median = statistics.median(warm)
            verdict = ("OK" if median < 3 else "ABOVE TARGET") if n == 1000 else ""
            print(f"{n:>6} {records:>8} {first:>13.2f} {median:>16.2f} {whole:>12.2f}   {verdict}")
            per_record = median / records * 1e6
            print(
                f"{'':>6} (nothing to do: {per_record:.0f} µs per manifest record; spread {min(warm):.2f}-{max(warm):.2f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
