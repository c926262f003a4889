"""``object_depth``: the median depth of every object and floating object (GranD step 17, ``--store_depth``).

The depth map is the ``depth`` stage's relative inverse depth (bigger = nearer) at reduced resolution, decoded
with :class:`grand_engine.stages.depth.DepthField` (``scale`` image pixels per depth pixel). For each object
(``link_phrases`` ids) the region is chosen in this order:

1. **mask** — the object's mask when one exists: the SA-1B annotation whose box has the highest IoU with the
   object's box, when that IoU is >= ``match_iou`` (0.65, the mask-match rule of step 21, in ``iou_convention``:
   ``continuous`` by default, ``pixel`` as the reference and the ``grand`` manifest); else a mask the object
   already carries (``segmentation``, e.g. a detector's); else the best match among ``sam_masks`` (images without
   SA-1B masks). The depth is the median over the depth pixels whose centre falls on the mask, read straight from
   the RLE runs (no full-resolution decode); a mask thinner than one depth pixel, which no centre falls on, uses
   :meth:`DepthField.median_in_mask` (every mask pixel reads the depth pixel it lies in).
2. **box** — otherwise: the median over the depth pixels the box touches (:meth:`DepthField.median_in_box`).

The reference took the median over the box only (background pixels dominate thin objects, §14.44), dropped pixels
equal to 0 (an artefact of its 8-bit normalised maps; here 0 is a valid value), computed floating objects only
when the image had no objects, and wrote NaN for an empty box (invalid JSON, §14.31). Here every object and
floating object gets a result; an empty region gives ``depth = null`` and ``depth_note`` says why — never NaN.

``depth_note`` values: ``sa1b mask``, ``detector mask``, ``sam mask``, ``box`` (the region used), ``box (empty
mask)``; for a null depth ``no box`` (null or non-finite box) or ``empty box`` (no area inside the image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import check_iou_convention, iou_matrix
from grand_engine.io import rle as rle_lib
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import table_schema
from grand_engine.stages.depth import DepthField

OBJECT_DEPTH = pa.struct([("object_id", pa.int32()), ("depth", pa.float32()), ("depth_note", pa.string())])
"""One object's depth (``object_id`` is a ``link_phrases`` id); ``depth`` is null when its region is empty."""

OBJECT_DEPTH_SCHEMA = table_schema(("depths", pa.list_(OBJECT_DEPTH)))
"""The ``object_depth`` table."""

MASK_NOTES: dict[str, str] = {"sa1b": "sa1b mask", "sam_masks": "sam mask"}
"""``depth_note`` of a region taken from each mask table."""


def mask_centre_values(field: DepthField, rle: Mapping[str, Any]) -> np.ndarray:
    """Depth values of the depth pixels whose centre falls on the RLE mask (sampled from its run lengths)."""
    h, w = field.depth.shape
    mh, mw = (int(v) for v in rle["size"])
    rows = np.minimum(((np.arange(h) + 0.5) * field.scale).astype(np.int64), mh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * field.scale).astype(np.int64), mw - 1)
    # COCO RLE is column-major and starts with a run of zeros: a pixel is set iff it falls in an odd run.
    ends = np.cumsum(rle_lib.run_lengths(rle))
    linear = cols[None, :] * mh + rows[:, None]
    on = np.searchsorted(ends, linear, side="right") % 2 == 1
    return field.depth[on]


def object_depth(
    field: DepthField, box: Any, mask: Mapping[str, Any] | None = None, mask_note: str = "mask"
) -> tuple[float | None, str]:
    """``(depth, depth_note)`` of one object from its box and optional RLE mask (see the module docstring)."""
    if box is None or len(box) != 4 or not all(v is not None and math.isfinite(v) for v in box):
        return None, "no box"
    note = "box"
    if mask is not None:
        values = mask_centre_values(field, mask)
        depth = float(np.median(values)) if values.size else field.median_in_mask(mask)
        if depth is not None:
            return depth, mask_note
        note = "box (empty mask)"
    depth = field.median_in_box(box)
    return (depth, note) if depth is not None else (None, "empty box")


def _annotation_boxes(annotations: list[dict[str, Any]]) -> np.ndarray:
    boxes = np.full((len(annotations), 4), np.nan, dtype=np.float64)
    for k, ann in enumerate(annotations):
        box = ann.get("bbox")
        if box is not None and len(box) == 4:
            boxes[k] = [np.nan if v is None else float(v) for v in box]
    return boxes


@dataclass
class ObjectDepth(Stage):
    """Median depth per object inside its mask (SA-1B match, own mask, SAM match), else inside its box."""

    name: ClassVar[str] = "object_depth"
    requires: ClassVar[tuple[str, ...]] = ("link_phrases", "depth", "sa1b", "sam_masks")
    level: ClassVar[int | None] = 2
    schema: ClassVar[pa.Schema] = OBJECT_DEPTH_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=64)

    match_iou: float = 0.65  # spec step 21: a mask belongs to an object when box IoU >= 0.65
    # step 21's IoU: "continuous" (no +1, the project's) or "pixel" (the reference's +1; set by the grand manifest)
    iou_convention: str = "continuous"
    mask_sources: tuple[str, ...] = ("sa1b", "sam_masks")  # mask tables, in priority order (own mask after sa1b)

    def __post_init__(self) -> None:
        self.mask_sources = tuple(self.mask_sources)
        self.iou_convention = check_iou_convention(self.iou_convention, "object_depth")

    def inputs(self) -> tuple[str, ...]:
        return ("link_phrases", "depth", *self.mask_sources)

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = unit.input_row("link_phrases", image_id)
        field = DepthField.from_row(unit.input_row("depth", image_id))
        sources = []
        for source in self.mask_sources:
            annotations = [a for a in unit.input_row(source, image_id).get("annotations") or [] if a]
            sources.append((source, annotations, _annotation_boxes(annotations)))
        depths = []
        for obj in (row.get("objects") or []) + (row.get("floating_objects") or []):
            mask, note = self._mask(obj, sources)
            depth, depth_note = object_depth(field, obj.get("bbox"), mask, note)
            depths.append({"object_id": int(obj["id"]), "depth": depth, "depth_note": depth_note})
        return {"image_id": image_id, "depths": depths}

    def _mask(
        self, obj: dict[str, Any], sources: list[tuple[str, list[dict[str, Any]], np.ndarray]]
    ) -> tuple[dict[str, Any] | None, str]:
        """The object's mask (RLE) and its note: SA-1B match, then the object's own mask, then the other tables."""
        box = obj.get("bbox")
        usable_box = box is not None and len(box) == 4 and all(v is not None and math.isfinite(v) for v in box)
        own = obj.get("segmentation")
        # Priority: the first mask table (SA-1B), the object's own mask, then the other tables (SAM).
        order: list[tuple[str, list[dict[str, Any]], np.ndarray] | None] = [*sources[:1], None, *sources[1:]]
        for entry in order:
            if entry is None:
                if own is not None:
                    return own, "detector mask"
                continue
            source, annotations, boxes = entry
            if usable_box and annotations:
                ious = np.nan_to_num(iou_matrix(box, boxes, self.iou_convention)[0], nan=-1.0)
                best = int(np.argmax(ious))
                if ious[best] >= self.match_iou:
                    return annotations[best]["segmentation"], MASK_NOTES.get(source, f"{source} mask")
        return None, "box"
