"""Wall time of ``grand-engine stats`` (:func:`grand_engine.quality.stats.compute_stats`) on a synthetic level-4 output.

The output has ``--units`` units of ``--unit-size`` images, each image shaped like GranD's averages: 74 regions (50
objects and 24 floating objects, every one with an SA-1B-size mask drawn from a pool of 32 box masks, 1500×2250),
1–3 attributes per object, labels drawn from a Zipf law over 5,000 names, two short captions with three grounded
phrases each, a 60-word dense caption with eight phrases and a verification record, and a ``depth`` row. Records
are compacted per shard as the driver does. The statistics are then computed in this process (the first pass
includes DuckDB's start) twice: decoding every mask for the mask-area distribution, then only the masks of
``--mask-sample`` images (what a run larger than the default sample of 20,000 images does); the script prints the
seconds, images per second and the process's peak memory.

    .venv/bin/python benchmarks/bench_stats.py [--units 16] [--unit-size 128] [--mask-sample 128]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import pyarrow as pa
from common import SA1B_HEIGHT, SA1B_WIDTH, header

from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.quality.stats import compute_stats
from grand_engine.runtime.records import RecordBook
from tests.grandf.level4 import images_table, level4_row, level4_table, obj, write_stage

VOCABULARY = 5000
OBJECTS, FLOATING = 50, 24


def mask_pool(rng: np.random.Generator, n: int = 32) -> list[tuple[tuple[int, int, int, int], dict]]:
    pool = []
    for _ in range(n):
        w, h = rng.integers(20, SA1B_WIDTH // 2), rng.integers(20, SA1B_HEIGHT // 2)
        x, y = rng.integers(0, SA1B_WIDTH - w), rng.integers(0, SA1B_HEIGHT - h)
        mask = np.zeros((SA1B_HEIGHT, SA1B_WIDTH), dtype=bool)
        mask[y : y + h, x : x + w] = True
        pool.append(((int(x), int(y), int(x + w), int(y + h)), rle.encode(mask)))
    return pool


def image_row(image_id: str, rng: np.random.Generator, pool: list, names: list[str]) -> dict:
    labels = rng.zipf(1.3, OBJECTS + FLOATING) % VOCABULARY
    regions = []
    for k in range(OBJECTS + FLOATING):
        box, mask = pool[int(rng.integers(len(pool)))]
        name = names[int(labels[k])]
        attributes = [f"a {name} seen from the side", f"the {name}", "something"][: int(rng.integers(1, 4))]
        regions.append(obj(k, box, name, attributes=attributes, mask=mask, depth=float(rng.random())))
    words = " ".join(names[int(i)] for i in rng.integers(0, VOCABULARY, 60))
    details = [
        {"phrase": "x", "tokens_positive": [0, 1], "ids": [k], "bbox": None, "match": "exact"} for k in range(8)
    ]
    status = str(rng.choice(["verified", "failed", "unchecked"]))
    return level4_row(
        image_id,
        SA1B_WIDTH,
        SA1B_HEIGHT,
        objects=regions[:OBJECTS],
        floating_objects=regions[OBJECTS:],
        short_captions=[{"caption": "a short caption", "details": details[:3]} for _ in range(2)],
        dense_caption={
            "caption": words,
            "details": details,
            "verification": {
                "status": status,
                "rounds": int(rng.integers(0, 3)),
                "checklist": [],
                "items_checked": 5,
                "items_confirmed": 4,
                "hallucination_rate_before": 0.2,
                "hallucination_rate_after": 0.1,
            },
        },
    )


def build(root: str, units: int, unit_size: int) -> OutputStore:
    rng = np.random.default_rng(0)
    pool = mask_pool(rng)
    names = [f"label{i}" for i in range(VOCABULARY)]
    store = OutputStore(root)
    for u in range(units):
        unit_id = f"sa_{u // 8:06d}/{u % 8:05d}"
        ids = [f"sa_{u * unit_size + i}" for i in range(unit_size)]
        write_stage(
            store,
            "images",
            unit_id,
            images_table([{"image_id": i, "width": SA1B_WIDTH, "height": SA1B_HEIGHT} for i in ids]),
        )
        write_stage(store, "level4", unit_id, level4_table([image_row(i, rng, pool, names) for i in ids]))
        depth = pa.table(
            {
                "image_id": ids,
                "min": pa.array([0.0] * len(ids), pa.float32()),
                "max": pa.array([1.0] * len(ids), pa.float32()),
            }
        )
        write_stage(store, "depth", unit_id, depth)
    book = RecordBook.load(store)
    for shard in sorted({f"sa_{u // 8:06d}" for u in range(units)}):
        book.compact_shard(store, shard)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--unit-size", type=int, default=128)
    parser.add_argument("--mask-sample", type=int, default=128)
    args = parser.parse_args()
    header("bench_stats: grand-engine stats on a synthetic level-4 output")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build(f"{tmp}/out", args.units, args.unit_size)
        images = args.units * args.unit_size
        print(f"built {images} images ({images * (OBJECTS + FLOATING):,} regions) in {time.perf_counter() - t0:.1f} s")
        for what, sample in (("every mask", None), (f"masks of ~{args.mask_sample} images", args.mask_sample)):
            t0 = time.perf_counter()
            stats = compute_stats(store, mask_sample_images=sample)
            seconds = time.perf_counter() - t0
            assert stats["per_image"]["regions"]["total"] == images * (OBJECTS + FLOATING)
            print(
                f"{what}: {stats['mask_area']['items']:,} masks decoded; {seconds:.2f} s, {images / seconds:,.0f} images/s, {images * (OBJECTS + FLOATING) / seconds:,.0f} regions/s"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory of the process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
