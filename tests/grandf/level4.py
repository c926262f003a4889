"""Hand-built level-4 tables and output folders.

``level4_table(rows)`` turns Python dicts into a table of the real ``level4`` schema (the shared structs of
``grand_engine/schema.py``); ``write_output(root, units)`` lays out an output folder the way a run does (stage
unit files plus their ``done`` manifest records), so exports and the explorer read it through the real store and
manifest code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import StageRecord, commit_record, data_path
from grand_engine.schema import IMAGES_SCHEMA
from grand_engine.stages.level4 import LEVEL4_SCHEMA


def box_mask(height: int, width: int, box: tuple[int, int, int, int]) -> dict[str, Any]:
    """The RLE of the pixel rectangle ``[x1, x2) × [y1, y2)``."""
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return rle.encode(mask)


def obj(
    oid: int,
    bbox: tuple[float, float, float, float],
    label: str | None,
    *,
    labels: list[str] | None = None,
    attributes: list[str] | None = None,
    mask: dict[str, Any] | None = None,
    source: str | None = "sa1b",
    score: float | None = 0.9,
    depth: float | None = 1.0,
) -> dict[str, Any]:
    """One OBJECT struct value."""
    labels = labels if labels is not None else ([label] if label else [])
    return {
        "id": oid,
        "bbox": [float(v) for v in bbox],
        "labels": labels,
        "qualifiers": [""] * len(labels),
        "label": label,
        "score": score,
        "sources": ["detect_lvis"],
        "attributes": attributes or [],
        "depth": depth,
        "depth_note": None,
        "segmentation": mask,
        "segmentation_source": source if mask is not None else None,
    }


def detail(phrase: str, span: list[int] | None, ids: list[int], boxes: list[list[float]] | None = None) -> dict:
    """One DETAIL struct value."""
    return {"phrase": phrase, "tokens_positive": span, "ids": ids, "bbox": boxes, "match": "exact"}


def verification(status: str = "verified") -> dict[str, Any]:
    return {
        "status": status,
        "rounds": 0,
        "checklist": [{"item": "dog", "verdict": "confirmed", "evidence": "scene_graph_exact", "score": 1.0}],
        "items_checked": 1,
        "items_confirmed": 1,
        "hallucination_rate_before": 0.0,
        "hallucination_rate_after": 0.0,
    }


def level4_row(image_id: str, width: int, height: int, **fields: Any) -> dict[str, Any]:
    """A level-4 row with empty defaults for every column not given."""
    row: dict[str, Any] = {
        "image_id": image_id,
        "width": width,
        "height": height,
        "objects": [],
        "floating_objects": [],
        "floating_attributes": [],
        "landmark": {"category": "outdoor", "fine_category": "park"},
        "affordances": [],
        "relationships": [],
        "short_captions": [],
        "dense_caption": None,
        "additional_context": "A quiet scene.",
    }
    row.update(fields)
    return row


def level4_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=LEVEL4_SCHEMA)


def images_table(rows: list[dict[str, Any]]) -> pa.Table:
    """An ``images`` table; each dict needs ``image_id``, ``width``, ``height`` (and optionally a locator)."""
    full = []
    for r in rows:
        full.append(
            {
                "file_name": f"{r['image_id']}.jpg",
                "format": "JPEG",
                "orientation": 1,
                "source": "",
                "offset": 0,
                "size": 0,
                "ann_source": None,
                "ann_offset": None,
                "ann_size": None,
                **r,
            }
        )
    return pa.Table.from_pylist(full, schema=IMAGES_SCHEMA)


def write_stage(store: OutputStore, stage: str, unit_id: str, table: pa.Table) -> None:
    """Write one (stage, unit) table and its ``done`` manifest record, as the driver does."""
    rel = data_path(stage, unit_id)
    size = store.write_table(rel, table)
    commit_record(
        store,
        StageRecord(
            stage=stage,
            unit_id=unit_id,
            fingerprint="test",
            status="done",
            rows=table.num_rows,
            images=table.num_rows,
            output=rel,
            bytes=size,
        ),
    )


def write_output(root: str | Path, units: dict[str, dict[str, pa.Table]]) -> OutputStore:
    """Lay out an output folder: ``units[unit_id][stage] = table`` for every unit and stage."""
    store = OutputStore(root)
    for unit_id, tables in units.items():
        for stage, table in tables.items():
            write_stage(store, stage, unit_id, table)
    return store


# -- the scene used by the grandf and export tests ------------------------------------------------------

W, H = 40, 30
CAPTION = "A brown dog chases a café ball near the old tree."
#          0123456789012345678901234567890123456789012345678
# "A brown dog" = [0, 11), "café ball" = [21, 30), "old tree" = [40, 48), "tree." ends at 49 = len(CAPTION)


def scene_row(image_id: str = "sa_1", status: str = "verified") -> dict[str, Any]:
    """The scene of the grandf/export tests (valid at level 4), with answers worked out by hand in the tests.

    Objects: 0 dog (mask), 1 ball (mask, labels ball/sports ball); floating: 2 tree (NO mask), 3 cat (mask,
    ``istant:`` prefix), 4 bird (no mask). Dense caption details (deliberately not in caption order):
    "old tree." [40, 49) ends at the caption's end → 2 (no mask: dropped); "café ball" [21, 30) → 1;
    "a brown dog" [0, 11) starts at 0 → 0.
    """
    dog = box_mask(H, W, (0, 0, 10, 10))
    ball = box_mask(H, W, (20, 20, 25, 25))
    cat = box_mask(H, W, (30, 0, 40, 10))
    return level4_row(
        image_id,
        W,
        H,
        objects=[
            obj(0, (0, 0, 10, 10), "dog", attributes=["Assistant: a brown dog running", "a dog"], mask=dog),
            obj(
                1,
                (20, 20, 25, 25),
                "ball",
                labels=["ball", "sports ball"],
                attributes=["a red ball"],
                mask=ball,
                source="sam",
            ),
        ],
        floating_objects=[
            obj(2, (5, 5, 35, 28), None, labels=["tree"], attributes=["an old tree"], mask=None),
            obj(
                3,
                (30, 0, 40, 10),
                None,
                labels=["cat"],
                attributes=["istant: a sleeping cat"],
                mask=cat,
                source="detector",
                score=None,
            ),
            obj(4, (1, 1, 3, 3), None, labels=["bird"], mask=None),
        ],
        floating_attributes=[{"bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5, "attributes": ["grass"]}],
        affordances=[
            {"category": "play", "description": "things to play with", "object_ids": [1], "labels": ["ball"]}
        ],
        relationships=[{"phrase": "a dog", "object_ids": [0]}, {"phrase": "a cat", "object_ids": [3]}],
        short_captions=[
            {
                "caption": "a dog and a cat",
                "details": [
                    detail("a dog", [0, 5], [0], [[0.0, 0.0, 10.0, 10.0]]),
                    detail("a cat", [10, 15], [3], [[30.0, 0.0, 40.0, 10.0]]),
                ],
            },
            {
                "caption": "Ünder a tree, a bird",
                "details": [detail("a tree", [6, 12], [2]), detail("a bird", [14, 20], [4])],
            },
        ],
        dense_caption={
            "caption": CAPTION,
            "details": [
                detail("old tree.", [40, 49], [2]),
                detail("café ball", [21, 30], [1]),
                detail("a brown dog", [0, 11], [0]),
            ],
            "verification": verification(status),
        },
        additional_context="The dog seems to be playing in a park on a sunny day.",
    )
