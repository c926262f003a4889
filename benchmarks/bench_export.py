"""Export throughput (records/s) and size per 1,000 images of every ``grand-engine export`` format.

A synthetic level-4 output of ``--images`` images (default 1,000) in units of 128 is written first: each image is
``--width``×``--height`` (SA-1B's typical 1500×2250) with ``--objects`` objects and ``--floating`` floating
objects, all with masks (random ellipses encoded once into a pool of 64 masks and reused, so building the output
stays fast), an attribute or two per object, two short captions with 2–3 grounded phrases each and a dense caption
with 8 grounded phrases (verified). The ``grandf`` table is built by the real ``GrandF`` stage. Then every format
is exported and timed. With ``--memory`` each export runs a second time under ``tracemalloc`` to report its peak
Python allocations, which stay flat in the number of images because exports stream unit by unit.

    .venv/bin/python benchmarks/bench_export.py [--images 1000] [--objects 30] [--floating 10] [--memory]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from common import header

from grand_engine.grandf.exports import export
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.grandf import GrandF
from tests.grandf.level4 import (
    detail,
    images_table,
    level4_row,
    level4_table,
    obj,
    verification,
    write_stage,
)

WORDS = ("person", "dog", "car", "tree", "bicycle", "bench", "umbrella", "bag", "kite", "boat", "house", "lamp")


def mask_pool(width: int, height: int, n: int, rng: np.random.Generator) -> list[tuple[dict[str, Any], list[float]]]:
    """``n`` random elliptic masks with their tight boxes."""
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        rx, ry = rng.uniform(0.03, 0.25) * width, rng.uniform(0.03, 0.25) * height
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        box = [float(v) for v in rle.to_bbox_xyxy(rle.encode(mask))[0]]
        out.append((rle.encode(mask), box))
    return out


def synthetic_row(image_id: str, n: int, args: argparse.Namespace, pool: list, rng: np.random.Generator) -> dict:
    total = args.objects + args.floating
    picks = rng.integers(0, len(pool), size=total)
    labels = [WORDS[(n + i) % len(WORDS)] for i in range(total)]
    entries = [
        obj(
            i,
            pool[p][1],
            labels[i] if i < args.objects else None,
            labels=[labels[i]],
            attributes=[f"a {labels[i]} seen from the side", f"{labels[i]}"],
            mask=pool[p][0],
            source="sa1b",
            depth=float(total - i),
        )
        for i, p in enumerate(picks)
    ]
    phrases = [f"the {labels[i]} number {i}" for i in range(8)]
    dense = "In this scene " + ", then ".join(phrases) + " stand together in a quiet street on a grey afternoon."
    details = [detail(p, [dense.index(p), dense.index(p) + len(p)], [i]) for i, p in enumerate(phrases)]
    shorts = []
    for k in range(2):
        words = [f"a {labels[k + j]}" for j in range(3)]
        text = " and ".join(words)
        shorts.append(
            {
                "caption": text,
                "details": [detail(w, [text.index(w), text.index(w) + len(w)], [k + j]) for j, w in enumerate(words)],
            }
        )
    return level4_row(
        image_id,
        args.width,
        args.height,
        objects=entries[: args.objects],
        floating_objects=entries[args.objects :],
        relationships=[{"phrase": f"a {labels[0]}", "object_ids": [0]}],
        short_captions=shorts,
        dense_caption={"caption": dense, "details": details, "verification": verification("verified")},
        additional_context="A paragraph of extra context about the place, the time of day and the likely activity.",
    )


def build_output(root: Path, args: argparse.Namespace) -> float:
    rng = np.random.default_rng(0)
    pool = mask_pool(args.width, args.height, 64, rng)
    store = OutputStore(root)
    start = time.perf_counter()
    for u, first in enumerate(range(0, args.images, args.unit_size)):
        unit_id = f"sa_000000/{u:05d}"
        ids = [f"sa_{i}" for i in range(first, min(args.images, first + args.unit_size))]
        rows = [synthetic_row(i, n, args, pool, rng) for n, i in enumerate(ids)]
        images = images_table([{"image_id": i, "width": args.width, "height": args.height} for i in ids])
        level4 = level4_table(rows)
        write_stage(store, "images", unit_id, images)
        write_stage(store, "level4", unit_id, level4)
        grandf = GrandF.configure().process(UnitInput(unit_id, images, {"level4": level4})).table
        write_stage(store, "grandf", unit_id, grandf)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--objects", type=int, default=30)
    p.add_argument("--floating", type=int, default=10)
    p.add_argument("--width", type=int, default=1500)
    p.add_argument("--height", type=int, default=2250)
    p.add_argument("--unit-size", type=int, default=128)
    p.add_argument("--keep", default=None, help="keep the output and exports in this folder")
    p.add_argument("--memory", action="store_true", help="also measure each export's peak Python allocations")
    args = p.parse_args()
    header("bench_export")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        seconds = build_output(work / "out", args)
        level4_bytes = sum(f.stat().st_size for f in (work / "out" / "level4").rglob("*.parquet"))
        grandf_bytes = sum(f.stat().st_size for f in (work / "out" / "grandf").rglob("*.parquet"))
        scale = 1000 / args.images
        print(
            f"synthetic output: {args.images} images of {args.width}x{args.height}, {args.objects} objects + "
            f"{args.floating} floating, built in {seconds:.1f} s; level4 Parquet {level4_bytes * scale / 1e6:.1f} MB "
            f"and grandf Parquet {grandf_bytes * scale / 1e6:.1f} MB per 1,000 images"
        )
        print(f"{'format':<18} {'records':>8} {'seconds':>8} {'records/s':>10} {'MB/1000 img':>12} {'peak MB':>8}")
        for fmt in ("grandf", "grandf-short", "grand", "coco", "refseg", "caption-grounding"):
            dest = work / "exports" / f"{fmt}.json"
            report = export(work / "out", fmt, dest)
            peak = "-"
            if args.memory:  # a second, traced run: tracing slows the export down, so it is not timed
                tracemalloc.start()
                export(work / "out", fmt, dest)
                peak = f"{tracemalloc.get_traced_memory()[1] / 1e6:.1f}"
                tracemalloc.stop()
            print(
                f"{fmt:<18} {report.records:>8} {report.seconds:>8.2f} {report.records_per_s:>10.1f} "
                f"{report.bytes * scale / 1e6:>12.1f} {peak:>8}"
            )
            if report.invalid:
                print(f"  {report.invalid} invalid records: {report.examples[:3]}")
                return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
