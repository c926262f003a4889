"""Peak memory and time of the ``sa1b`` stage on one image with 5,000 SA-1B masks.

One 1500×2250 (W×H, SA-1B's typical size) JPEG whose JSON holds ``n`` box masks of random size (10 to
400 px a side) as COCO compressed RLE. The shard is run through ``images → sa1b`` on the inline backend
in a fresh child process, which reports its peak resident set size (``ru_maxrss``) and the wall time of
the run. Decoding every mask at once would need ``n × 1500 × 2250`` bytes (16.9 GB for 5,000 masks);
the stage only parses and checks run lengths, so its peak should stay a small multiple of the JSON.

    .venv/bin/python benchmarks/bench_many_masks.py [--masks 5000] [--width 1500] [--height 2250]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests import this module as benchmarks.bench_many_masks

from common import add_member, box_rle_counts, child_env, last_json_line  # noqa: E402

from grand_engine.io import rle  # noqa: E402

__all__ = ["box_rle_counts", "many_masks_shard"]  # box_rle_counts: the tests' box masks

PIPELINE = textwrap.dedent(
    """
    name: many-masks
    stages:
      images: {}
      sa1b: {}
    """
)


def many_masks_shard(
    folder: Path, n_masks: int = 5000, width: int = 1500, height: int = 2250, seed: int = 0
) -> tuple[Path, list[dict[str, Any]]]:
    """Write ``folder/sa_000000.tar`` with one image carrying ``n_masks`` box masks.

    Returns the tar and, per mask, its ``id``, xyxy ``bbox_xyxy`` and ``area`` (for checking).
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 401, size=(n_masks, 2))
    anns, expected = [], []
    for k, (w, h) in enumerate(sizes.tolist()):
        x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        seg = rle.normalize({"size": [height, width], "counts": box_rle_counts(height, width, x1, y1, w, h)})
        anns.append(
            {
                "id": 100_000 + k,
                "segmentation": seg,
                "bbox": [x1, y1, w, h],
                "area": w * h,
                "predicted_iou": 0.9,
                "stability_score": 0.95,
                "point_coords": [[x1 + w / 2, y1 + h / 2]],
                "crop_box": [0, 0, width, height],
            }
        )
        expected.append({"id": 100_000 + k, "bbox_xyxy": [x1, y1, x1 + w, y1 + h], "area": float(w * h)})
    doc = {"image": {"image_id": 1, "width": width, "height": height, "file_name": "sa_1.jpg"}, "annotations": anns}
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, format="JPEG", quality=90)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sa_000000.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "sa_1.jpg", buf.getvalue())
        add_member(tar, "sa_1.json", json.dumps(doc).encode())
    return path, expected


def _child(shard: str, out: str, manifest: str) -> None:
    """Run the pipeline once in this process and print JSON figures (called in a fresh interpreter)."""
    # deferred: only the child process runs the pipeline (its imports are in the RSS it reports)
    from grand_engine.config import load_manifest
    from grand_engine.runtime.run import run

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    _, summary = run(load_manifest(manifest), [shard], out, backend="inline", progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "ok": summary.ok,
                "error_rows": summary.error_rows,
                "seconds": seconds,
                "sa1b_seconds": summary.per_stage["sa1b"].seconds,
                "rss_before_mb": base / 1024,
                "peak_rss_mb": peak / 1024,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=5000)
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--height", type=int, default=2250)
    parser.add_argument("--child", nargs=3, metavar=("SHARD", "OUT", "MANIFEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        shard, _ = many_masks_shard(tmp_path / "shards", args.masks, args.width, args.height)
        build = time.perf_counter() - t0
        manifest = tmp_path / "many_masks.yaml"
        manifest.write_text(PIPELINE)
        cmd = [sys.executable, __file__, "--child", str(shard), str(tmp_path / "out"), str(manifest)]
        try:
            figures = last_json_line(cmd, child_env(), "the images+sa1b run")
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        json_mb = (tmp_path / "shards" / "sa_000000.tar").stat().st_size / 1e6
        naive_gb = args.masks * args.width * args.height / 1e9
        print(
            f"{args.masks} masks on one {args.width}×{args.height} image; shard {json_mb:.1f} MB (built in {build:.1f} s)"
        )
        print(f"run ok: {figures['ok']}, error rows: {figures['error_rows']}")
        print(f"images+sa1b wall time: {figures['seconds']:.2f} s (sa1b stage {figures['sa1b_seconds']:.2f} s)")
        print(
            f"peak RSS: {figures['peak_rss_mb']:.0f} MB (interpreter with imports before the run: "
            f"{figures['rss_before_mb']:.0f} MB; decoding every mask at once would need {naive_gb:.1f} GB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
