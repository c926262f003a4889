"""Time the ``level1`` merge per image at 100, 500 and 2,000 input boxes.

Each synthetic image has ``n`` detector boxes spread over the six default slots: jittered copies of
``n / 4`` underlying objects (so voting, self-NMS and floating objects all happen) with raw-vocabulary
labels. The whole ``Stage.process`` call is timed: reading the Arrow inputs, normalisation, self-NMS,
voting, affordances, invariant checks and building the output table.

Target: time per image grows no worse than linearly × 1.3 from 100 to 2,000 boxes.

    .venv/bin/python benchmarks/bench_level1.py [--sizes 100 500 2000] [--images 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyarrow as pa

from grand_engine.runtime.stage import UnitInput
from grand_engine.schema import DETECTIONS_FIELDS, IMAGES_SCHEMA, table_schema
from grand_engine.stages.level1 import DEFAULT_SOURCES, Level1

WIDTH, HEIGHT = 1500, 1000
RAW_LABELS = ["dog", "person", "wine_glass", "sandal_(type_of_shoe)", "traffic_light", "cup", "man", "baseball_bat"]
DETECTIONS = table_schema(*DETECTIONS_FIELDS)
SAM = table_schema(*DETECTIONS_FIELDS, ("annotation_ids", pa.list_(pa.int64())))
CAPTIONS = table_schema(
    ("boxes", DETECTIONS_FIELDS[0][1]), ("scores", pa.list_(pa.float32())), ("descriptions", pa.list_(pa.string()))
)


def synthetic_image(n: int, rng: np.random.Generator) -> dict[str, dict]:
    """One image's rows for every slot, ``n`` boxes in total."""
    n_objects = max(1, n // 4)
    wh = rng.uniform(20, 200, size=(n_objects, 2))
    xy = rng.uniform(0, 1, size=(n_objects, 2)) * (np.array([WIDTH, HEIGHT]) - wh)
    truth = np.concatenate([xy, xy + wh], axis=1)
    truth_label = rng.integers(len(RAW_LABELS), size=n_objects)
    slot_of = rng.integers(len(DEFAULT_SOURCES), size=n)
    rows = {}
    for s, slot in enumerate(DEFAULT_SOURCES):
        k = int((slot_of == s).sum())
        pick = rng.integers(n_objects, size=k)
        jitter = rng.normal(0, 0.08, size=(k, 4)) * np.repeat(wh[pick], 2, axis=1)
        boxes = np.clip(truth[pick] + jitter, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        row = {"boxes": boxes.tolist(), "scores": rng.uniform(0.05, 1.0, size=k).astype(np.float32).tolist()}
        if slot == "region_captions":
            row["descriptions"] = [f"a photo of {RAW_LABELS[truth_label[p]].split('_')[0]}" for p in pick]
        else:
            row["labels"] = [RAW_LABELS[truth_label[p]] for p in pick]
        if slot == "sam_classify":
            row["annotation_ids"] = list(range(k))
        rows[slot] = row
    return rows


def build_unit(n: int, images: int, seed: int = 0) -> UnitInput:
    rng = np.random.default_rng(seed)
    ids = [f"img{i:04d}" for i in range(images)]
    per_slot: dict[str, list[dict]] = {slot: [] for slot in DEFAULT_SOURCES}
    for image_id in ids:
        for slot, row in synthetic_image(n, rng).items():
            per_slot[slot].append({"image_id": image_id, **row})
    schemas = {"region_captions": CAPTIONS, "sam_classify": SAM}
    inputs = {
        slot: pa.Table.from_pylist(rows, schema=schemas.get(slot, DETECTIONS)) for slot, rows in per_slot.items()
    }
    image_rows = [
        {"image_id": i, "file_name": f"{i}.jpg", "width": WIDTH, "height": HEIGHT, "format": "JPEG", "orientation": 1}
        for i in ids
    ]
    return UnitInput("bench/00000", pa.Table.from_pylist(image_rows, schema=IMAGES_SCHEMA), inputs)


def time_per_image(n: int, images: int, repeat: int, **params) -> tuple[float, dict[str, int]]:
    """Median seconds per image over ``repeat`` runs, plus output counts of the last run."""
    stage = Level1.configure(params)
    stage.setup()
    times = []
    for r in range(repeat):
        unit = build_unit(n, images, seed=r)  # fresh unit: no row cache carried between runs
        start = time.perf_counter()
        result = stage.process(unit)
        times.append((time.perf_counter() - start) / images)
        if result.errors:
            raise RuntimeError(f"level1 reported errors: {result.errors[:3]}")
    table = result.table
    counts = {
        col: int(sum(len(v) for v in table.column(col).to_pylist()))
        for col in ("objects", "floating_objects", "floating_attributes")
    }
    return statistics.median(times), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--images", type=int, default=20, help="images per unit")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    results = {}
    print(f"level1: {args.images} images per unit, median of {args.repeat} runs, {WIDTH}x{HEIGHT} images")
    print(f"{'boxes':>6} {'ms/image':>9} {'no checks':>10} {'objects':>8} {'floating':>9} {'float.attr':>10}")
    for n in args.sizes:
        t, counts = time_per_image(n, args.images, args.repeat)
        t_nocheck, _ = time_per_image(n, args.images, args.repeat, check_invariants=False)
        results[n] = t
        print(
            f"{n:>6} {t * 1e3:>9.2f} {t_nocheck * 1e3:>10.2f} {counts['objects'] / args.images:>8.1f} "
            f"{counts['floating_objects'] / args.images:>9.1f} {counts['floating_attributes'] / args.images:>10.1f}"
        )
    lo, hi = min(results), max(results)
    growth = results[hi] / results[lo]
    bound = (hi / lo) * 1.3
    verdict = "OK" if growth <= bound else "ABOVE TARGET"
    print(f"growth {lo} -> {hi} boxes: x{growth:.1f} (target <= linear x1.3 = x{bound:.1f}): {verdict}")


if __name__ == "__main__":
    main()
