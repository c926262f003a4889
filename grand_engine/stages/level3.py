"""``level3``: the complete level-3 annotation (GranD steps 20–22 put together, §6–§8).

One row per image from ``level2``, ``ground_captions``, ``masks`` and ``verify``:

* every ``level2`` column except ``captions`` (the reference replaced ``captions`` by ``short_captions``,
  step 20a; each short caption keeps its text);
* ``objects`` / ``floating_objects`` with ``segmentation``, ``segmentation_source`` and the updated ``bbox``
  from ``masks`` (every object and floating object must have exactly one mask entry);
* ``short_captions`` and ``dense_caption`` from ``ground_captions``, with every detail's ``bbox`` list rebuilt
  from the final boxes of its ``ids`` — the reference left the detail boxes at their pre-mask values (§14.39);
* ``dense_caption.verification`` from ``verify`` (whose ``caption`` must be the grounded dense caption).

Every row is checked with :func:`grand_engine.validate.validate_annotation` at level 3 (``check_invariants``;
details index their captions, detail boxes equal object boxes, every object has a mask, …); a row that breaks
an invariant, or inputs that disagree (a missing or duplicate mask, a detail naming an unknown id, a dense
caption that is not ``verify``'s), become that image's error row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import DENSE_CAPTION, OBJECT, SHORT_CAPTION, table_schema
from grand_engine.stages.level2 import LEVEL2_FIELDS
from grand_engine.validate import SEGMENTATION_SOURCES

__all__ = ["LEVEL3_FIELDS", "LEVEL3_SCHEMA", "Level3", "merge_level3"]

LEVEL3_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    *(f for f in LEVEL2_FIELDS if f[0] != "captions"),
    ("short_captions", pa.list_(SHORT_CAPTION)),
    ("dense_caption", DENSE_CAPTION),
)
"""The ``level3`` table's columns after ``image_id``."""

LEVEL3_SCHEMA = table_schema(*LEVEL3_FIELDS)

_OBJECT_FIELDS = tuple(OBJECT.field(i).name for i in range(OBJECT.num_fields))


def _with_mask(obj: dict[str, Any], mask: dict[str, Any] | None) -> dict[str, Any]:
    out = {name: obj.get(name) for name in _OBJECT_FIELDS}
    if mask is None:
        raise ValueError(f"object id {obj.get('id')} has no entry in `masks`")
    source = mask.get("segmentation_source")
    if source not in SEGMENTATION_SOURCES:
        raise ValueError(
            f"object id {obj.get('id')}: segmentation_source {source!r} is not one of {SEGMENTATION_SOURCES}"
        )
    if mask.get("segmentation") is None or mask.get("bbox") is None:
        raise ValueError(f"object id {obj.get('id')}: its `masks` entry has no segmentation or no bbox")
    out["segmentation"] = mask["segmentation"]
    out["segmentation_source"] = source
    out["bbox"] = list(mask["bbox"])
    return out


def _rebox(details: list[dict[str, Any]] | None, boxes: dict[int, list[float]], where: str) -> list[dict[str, Any]]:
    out = []
    for det in details or []:
        ids = list(det.get("ids") or [])
        missing = [i for i in ids if i not in boxes]
        if missing:
            raise ValueError(f"{where}: detail {det.get('phrase')!r} names unknown object id(s) {missing}")
        out.append({**det, "ids": ids, "bbox": [boxes[i] for i in ids]})
    return out


def merge_level3(
    level2: dict[str, Any],
    grounded: dict[str, Any],
    masks: list[dict[str, Any]],
    verify: dict[str, Any],
) -> dict[str, Any]:
    """The ``level3`` row (without ``image_id``) of one image; raises ``ValueError`` when the inputs disagree."""
    by_id: dict[int, dict[str, Any]] = {}
    for m in masks or []:
        oid = m.get("object_id")
        if oid in by_id:
            raise ValueError(f"`masks` has two entries for object id {oid}")
        by_id[oid] = m
    objects = [_with_mask(o, by_id.get(o.get("id"))) for o in level2.get("objects") or []]
    floating = [_with_mask(o, by_id.get(o.get("id"))) for o in level2.get("floating_objects") or []]
    boxes = {o["id"]: o["bbox"] for o in objects + floating}
    extra = sorted(set(by_id) - set(boxes))
    if extra:
        raise ValueError(f"`masks` has entries for object ids {extra}, which level2 does not have")

    short = [
        {"caption": cap.get("caption"), "details": _rebox(cap.get("details"), boxes, f"short_captions[{i}]")}
        for i, cap in enumerate(grounded.get("short_captions") or [])
    ]
    dense = grounded.get("dense_caption") or {}
    caption = dense.get("caption")
    if caption != verify.get("caption"):
        raise ValueError(
            "the grounded dense caption is not the verified caption (ground_captions and verify disagree)"
        )
    dense_caption = {
        "caption": caption,
        "details": _rebox(dense.get("details"), boxes, "dense_caption"),
        "verification": verify.get("verification"),
    }
    row = {name: level2.get(name) for name, _ in LEVEL3_FIELDS}
    row.update(objects=objects, floating_objects=floating, short_captions=short, dense_caption=dense_caption)
    return row


@dataclass
class Level3(Stage):
    """Attach masks (with their boxes) and the grounded captions to the level-2 annotation."""

    name: ClassVar[str] = "level3"
    requires: ClassVar[tuple[str, ...]] = ("level2", "ground_captions", "masks", "verify")
    level: ClassVar[int | None] = 3
    schema: ClassVar[pa.Schema] = LEVEL3_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=256)

    check_invariants: bool = True  # validate each output row at level 3 (spec §8 invariants)

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = merge_level3(
            unit.input_row("level2", image_id),
            unit.input_row("ground_captions", image_id),
            unit.input_row("masks", image_id).get("masks") or [],
            unit.input_row("verify", image_id),
        )
        row["image_id"] = image_id
        return self.require_valid(row, 3) if self.check_invariants else row
