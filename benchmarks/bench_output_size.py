"""Output size: bytes per image of each level table and of the ``grand`` JSON export, against the reference's
per-image JSON layout (spec §8, ``json.dump(indent=4)``, one file per image) on the same records.

A synthetic unit of ``--images`` SA-1B-sized images (1500×2250) is built the way a run leaves it: per image
``--objects`` objects and ``--floating`` floating objects, each with its **own** polygon mask (compressed RLE of a
few hundred bytes to a few KB, like SAM's; no mask shared between objects, so Parquet's dictionary encoding is
not flattered), one or two labels and attributes, a landmark, affordances, relationships, two grounded short
captions, a ~60-word grounded dense caption with its verification record and an extra-context paragraph; and
the image's ``--masks`` SA-1B annotations for the ``sa1b`` table. Each level table holds what that level adds:
``level1`` (objects without label, depth or mask), ``level2`` (+ label, depth, relationships, captions),
``level3`` (+ masks, grounded captions), ``level4`` (+ extra context). Tables are written by the engine's own
store (Parquet, zstd, one row group per unit); the ``grand`` export is the engine's exporter (JSON Lines).

    .venv/bin/python benchmarks/bench_output_size.py [--images 128] [--objects 30] [--floating 10] [--masks 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from common import SA1B_HEIGHT, SA1B_WIDTH, header, polygon_annotations

from grand_engine.grandf.exports import export
from grand_engine.grandf.records import grand_record
from grand_engine.io.store import OutputStore
from grand_engine.stages.level1 import LEVEL1_SCHEMA, affordances_for
from grand_engine.stages.level2 import LEVEL2_SCHEMA
from grand_engine.stages.level3 import LEVEL3_SCHEMA
from grand_engine.stages.level4 import LEVEL4_SCHEMA
from grand_engine.stages.masks import MASKS_SCHEMA
from grand_engine.stages.sa1b import SA1BStage, parse_annotations
from tests.grandf.level4 import detail, images_table, obj, verification, write_stage

NOUNS = "person dog car tree bicycle bench umbrella bag kite boat house lamp cup chair table bird".split()
ADJECTIVES = "red small wooden old bright dark tall round striped shiny rusty white".split()


def level4_rows(args: argparse.Namespace, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """(level-4 rows, sa1b rows) of a synthetic unit."""
    rows, sa1b = [], []
    for n in range(args.images):
        image_id = f"sa_{n + 1}"
        total = args.objects + args.floating
        anns = polygon_annotations(total + args.masks, SA1B_WIDTH, SA1B_HEIGHT, rng)
        entries = []
        for i in range(total):
            ann = anns[i]
            x, y, w, h = ann["bbox"]
            noun, adj = NOUNS[int(rng.integers(len(NOUNS)))], ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
            labels = [noun] if i % 3 else [noun, NOUNS[int(rng.integers(len(NOUNS)))]]
            entries.append(
                obj(
                    i,
                    (x, y, x + w, y + h),
                    noun,
                    labels=labels,
                    attributes=[f"a {adj} {noun} seen from the side", f"{adj} {noun}"],
                    mask=ann["segmentation"],
                    source="sa1b" if i % 4 else "sam",
                    score=float(rng.uniform(0.3, 1.0)),
                    depth=float(rng.uniform(0.5, 20.0)),
                )
            )
        phrases = [f"the {entries[i]['attributes'][1]}" for i in range(8)]
        dense = "In this scene " + ", then ".join(phrases) + " stand together in a quiet street on a grey afternoon."
        details = [
            detail(p, [dense.index(p), dense.index(p) + len(p)], [i], [entries[i]["bbox"]])
            for i, p in enumerate(phrases)
        ]
        shorts = []
        for k in range(2):
            words = [f"a {entries[k + j]['label']}" for j in range(3)]
            text = " and ".join(words) + " outside"
            shorts.append(
                {
                    "caption": text,
                    "details": [
                        detail(w, [text.index(w), text.index(w) + len(w)], [k + j], [entries[k + j]["bbox"]])
                        for j, w in enumerate(words)
                    ],
                }
            )
        rows.append(
            {
                "image_id": image_id,
                "width": SA1B_WIDTH,
                "height": SA1B_HEIGHT,
                "objects": entries[: args.objects],
                "floating_objects": entries[args.objects :],
                "floating_attributes": [
                    {"bbox": [10.0, 20.0, 60.0, 90.0], "score": 0.8, "attributes": ["a sign on a pole"]}
                ],
                "landmark": {"category": "outdoor", "fine_category": "street"},
                "affordances": affordances_for(entries),
                "relationships": [
                    {"phrase": f"the {entries[k]['attributes'][1]}", "object_ids": [k]} for k in range(0, total, 5)
                ],
                "captions": [s["caption"] for s in shorts],
                "short_captions": shorts,
                "dense_caption": {"caption": dense, "details": details, "verification": verification()},
                "additional_context": (
                    "The street looks like a residential area in the late afternoon; people walk home, the shops "
                    "are about to close and the light suggests autumn. The objects suggest a relaxed weekend."
                ),
            }
        )
        sa1b.append({"image_id": image_id, "annotations": anns[total:], "width": SA1B_WIDTH, "height": SA1B_HEIGHT})
    return rows, sa1b


def level_table(rows: list[dict[str, Any]], level: int) -> pa.Table:
    """The ``level<N>`` table of the rows: each level's columns, objects as that level has them."""
    schema = {1: LEVEL1_SCHEMA, 2: LEVEL2_SCHEMA, 3: LEVEL3_SCHEMA, 4: LEVEL4_SCHEMA}[level]
    out = []
    for row in rows:
        r = {name: row.get(name) for name in schema.names}
        for key in ("objects", "floating_objects"):
            objs = []
            for o in row[key]:
                o = dict(o)
                if level < 3:
                    o["segmentation"] = o["segmentation_source"] = None
                if level < 2:
                    o["label"] = o["depth"] = o["depth_note"] = None
                objs.append(o)
            r[key] = objs
        out.append(r)
    return pa.Table.from_pylist(out, schema=schema)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--objects", type=int, default=30)
    parser.add_argument("--floating", type=int, default=10)
    parser.add_argument("--masks", type=int, default=100, help="SA-1B annotations per image (the sa1b table)")
    args = parser.parse_args()
    header("bench_output_size")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    rows, sa1b_rows = level4_rows(args, rng)
    print(
        f"{args.images} images of {SA1B_WIDTH}x{SA1B_HEIGHT}: {args.objects} objects + {args.floating} floating, each "
        f"with its own mask; {args.masks} SA-1B masks per image (built in {time.perf_counter() - start:.1f} s)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-size-") as tmp:
        store = OutputStore(Path(tmp) / "out")
        unit = "sa_000000/00000"
        ids = [{"image_id": r["image_id"], "width": SA1B_WIDTH, "height": SA1B_HEIGHT} for r in rows]
        write_stage(store, "images", unit, images_table(ids))
        sizes: dict[str, int] = {}
        for level in (1, 2, 3, 4):
            table = level_table(rows, level)
            write_stage(store, f"level{level}", unit, table)
            sizes[f"level{level} table"] = (Path(tmp) / "out" / f"level{level}" / f"{unit}.parquet").stat().st_size
        masks = pa.Table.from_pylist(
            [
                {
                    "image_id": r["image_id"],
                    "masks": [
                        {
                            "object_id": o["id"],
                            "bbox": o["bbox"],
                            "segmentation": o["segmentation"],
                            "segmentation_source": o["segmentation_source"],
                            "match_iou": 0.8,
                        }
                        for o in r["objects"] + r["floating_objects"]
                    ],
                }
                for r in rows
            ],
            schema=MASKS_SCHEMA,
        )
        sa1b_rows_table = []
        sa1b_json = 0
        for r in sa1b_rows:
            doc = {
                "image": {"image_id": 1, "width": SA1B_WIDTH, "height": SA1B_HEIGHT},
                "annotations": r["annotations"],
            }
            raw = json.dumps(doc).encode()
            sa1b_json += len(raw)
            sa1b_rows_table.append({"image_id": r["image_id"], **parse_annotations(raw, SA1B_WIDTH, SA1B_HEIGHT)})
        side = {"masks": masks, "sa1b": pa.Table.from_pylist(sa1b_rows_table, schema=SA1BStage.schema)}
        for name, table in side.items():
            sizes[f"{name} table"] = store.write_table(f"{name}/{unit}.parquet", table)

        report = export(store, "grand", Path(tmp) / "grand.jsonl")
        if report.invalid:
            print(f"the grand export refused {report.invalid} records: {report.examples[:2]}")
            return 1
        sizes["grand export (JSON Lines)"] = report.bytes
        stored = pa.Table.from_pylist(rows, schema=LEVEL4_SCHEMA).to_pylist()
        reference = sum(
            len(json.dumps({f"{r['image_id']}.jpg": grand_record(r)}, indent=4, ensure_ascii=False).encode())
            for r in stored
        )
        blocks = sum(
            -(-len(json.dumps({f"{r['image_id']}.jpg": grand_record(r)}, indent=4).encode()) // 4096) * 4096
            for r in stored
        )
        print(f"{'output':<28} {'KB/image':>9} {'vs reference':>13}")
        for name, size in sizes.items():
            print(f"{name:<28} {size / args.images / 1024:>9.1f} {size / reference:>12.2f}x")
        print(
            f"{'reference per-image JSON':<28} {reference / args.images / 1024:>9.1f} {1:>12.2f}x   (spec §8, indent 4)"
        )
        print(f"{'  on a 4 KiB-block disk':<28} {blocks / args.images / 1024:>9.1f} {blocks / reference:>12.2f}x")
        print(f"{'SA-1B JSON (sa1b input)':<28} {sa1b_json / args.images / 1024:>9.1f}")
        total = sum(v for k, v in sizes.items() if k.endswith("table"))
        print(
            f"all tables above: {total / args.images / 1024:.1f} KB/image = "
            f"{total / args.images * 1e6 / 1e12:.2f} TB per million images "
            f"(level tables only: {sum(sizes[f'level{n} table'] for n in (1, 2, 3, 4)) / args.images * 1e6 / 1e12:.2f} TB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
