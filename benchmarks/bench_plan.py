"""Plan-and-resume cost: time to plan N units and decide that nothing is left to do.

Builds synthetic shards of tiny JPEGs (unit size 1, so N images = N units), runs the `images` and `sa1b`
stages once with the inline backend, then times a no-op `grand-engine run` on the same output: in-process
(plan + decision) and as a whole process (interpreter start-up and imports included).

    python benchmarks/bench_plan.py --units 1000 10000
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image


def write_shards(folder: Path, n_images: int, per_shard: int = 1000) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    for s in range(0, n_images, per_shard):
        with tarfile.open(folder / f"sa_{s // per_shard:06d}.tar", "w") as tar:
            for i in range(s, min(s + per_shard, n_images)):
                ann = json.dumps({"image": {"image_id": i, "width": 8, "height": 8}, "annotations": []}).encode()
                for name, data in ((f"sa_{i}.jpg", jpeg), (f"sa_{i}.json", ann)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, nargs="+", default=[1000])
    args = parser.parse_args()
    from grand_engine.config import load_manifest
    from grand_engine.io.store import OutputStore
    from grand_engine.runtime.pipeline import build_pipeline
    from grand_engine.runtime.plan import make_plan
    from grand_engine.runtime.run import run

    manifest = load_manifest("tiny")
    for n in args.units:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "shards").mkdir()
            write_shards(root / "shards", n)
            out = root / "out"
            t0 = time.perf_counter()
            run(
                manifest,
                [str(root / "shards")],
                str(out),
                stages=["sa1b"],
                unit_size=1,
                backend="inline",
                progress=False,
            )
            first = time.perf_counter() - t0
            pipeline = build_pipeline(manifest, stages=["sa1b"])
            t0 = time.perf_counter()
            plan = make_plan(pipeline, [str(root / "shards")], OutputStore(out), unit_size=1)
            plan_s = time.perf_counter() - t0
            assert plan.pairs_todo() == 0, plan.pairs_todo()
            cmd = [
                sys.executable,
                "-m",
                "grand_engine.cli",
                "run",
                "--shards",
                str(root / "shards"),
                "--out",
                str(out),
                "--stages",
                "sa1b",
                "--unit-size",
                "1",
                "--no-progress",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            whole = time.perf_counter() - t0
            assert "0 (stage, unit) tasks to run" in proc.stdout, proc.stdout
            print(
                f"units={n:>6}  first run {first:7.2f} s  plan+decide (in process) {plan_s:6.2f} s  "
                f"no-op `grand-engine run` (whole process) {whole:6.2f} s"
            )


if __name__ == "__main__":
    main()
