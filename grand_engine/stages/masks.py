"""``masks``: one mask for every object and floating object (GranD steps 21–22, §7; §14 items 17, 38, 39 fixed).

For each object and floating object of the ``level2`` row (box B), in this order:

1. **Region masks** (step 21.1): among the image's region masks — the SA-1B annotations (``sa1b`` table) and,
   for an image without them, SAM's automatic masks (``sam_masks`` table, same annotation format) — the one
   whose box has the highest IoU with B (first on ties). When that IoU is ``>= match_iou`` its mask is taken
   and **B is replaced by that mask's box** (clipped to the image). The reference's Dice test is not repeated:
   for boxes it is implied by IoU ≥ 0.65 (spec §0.3). ``segmentation_source`` is the table's entry in
   ``region_tables``: ``sa1b`` for SA-1B annotations, ``sam`` for SAM's automatic masks.
2. **Detector masks** (step 21.2, the reference's EVA-02 masks): the same rule over the boxes of the side tables
   named in ``detector_mask_tables`` (each with ``boxes`` list<BOX> and an aligned ``masks`` list<RLE>; a null
   mask entry is skipped) → ``segmentation_source = "detector"``, B replaced by the detector box. None of the
   current detector slots produces masks, so the list is empty by default.
3. **SAM box prompt** (step 22): every object still without a mask is segmented by the ``sam`` slot with its own
   **xyxy** box as the prompt (the reference read xyxy boxes as XYWH and prompted with enlarged boxes,
   §14.38), single-mask output. The image is encoded once and its boxes go through the decoder at most
   ``max_boxes_per_call`` at a time (the reference pushed all of them through one call, §14.17). B is kept;
   ``segmentation_source = "sam"``.

Both objects and floating objects get masks (the reference computed floating-object masks too, and its
exporter then dropped them, §14.47). Two objects may take the same region mask, as in the reference.

Output: ``masks`` — one entry per object then floating object (``level2`` order) with ``object_id``, ``bbox``
(the box after the update), ``segmentation`` (COCO RLE of the image's size), ``segmentation_source`` and
``match_iou`` (the IoU of B with the matched mask's box; null for SAM prompts). ``level3`` applies them to the
objects and to the grounding details' boxes together (the reference left the detail boxes stale, §14.39).

Bad input is an error row naming it: an object without a usable box, a mask whose size is not the image's,
a detector table whose ``boxes`` and ``masks`` differ in length, or objects needing SAM with no ``sam`` slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import clip_boxes, iou_matrix, order_corners
from grand_engine.runtime.stage import Resources, Stage, StageResult, UnitInput
from grand_engine.schema import BOX, RLE, table_schema
from grand_engine.validate import SEGMENTATION_SOURCES

__all__ = ["MASK", "MASKS_SCHEMA", "MaskPool", "Masks", "assign_masks"]

MASK = pa.struct(
    [
        ("object_id", pa.int32()),
        ("bbox", BOX),  # the object's box after the update (the matched mask's box, or its own box for SAM)
        ("segmentation", RLE),
        ("segmentation_source", pa.string()),  # sa1b | detector | sam
        ("match_iou", pa.float32()),  # IoU of the object's box with the matched mask's box; null for SAM prompts
    ]
)

MASKS_SCHEMA = table_schema(("masks", pa.list_(MASK)))
"""The ``masks`` table."""


@dataclass
class MaskPool:
    """Candidate masks of one kind for one image: ``(N, 4)`` xyxy boxes, their RLEs and their source names."""

    boxes: np.ndarray
    rles: list[dict[str, Any]]
    sources: list[str]

    @classmethod
    def empty(cls) -> MaskPool:
        return cls(np.zeros((0, 4), dtype=np.float64), [], [])

    def add(self, boxes: list[Any], rles: list[Any], source: str, where: str, size: list[int]) -> None:
        """Append the entries with a usable box and mask; a mask of another size raises ``ValueError``."""
        keep_boxes = []
        for i, (box, seg) in enumerate(zip(boxes, rles, strict=True)):
            if box is None or seg is None:
                continue
            values = [float(v) if v is not None else math.nan for v in box]
            if len(values) != 4 or not all(math.isfinite(v) for v in values):
                continue
            if list(seg.get("size") or []) != size or not seg.get("counts"):
                raise ValueError(
                    f"{where}[{i}]: mask size {list(seg.get('size') or [])} is not the image's [height, width] {size}"
                )
            keep_boxes.append(values)
            self.rles.append({"size": [int(size[0]), int(size[1])], "counts": seg["counts"]})
            self.sources.append(source)
        if keep_boxes:
            self.boxes = np.concatenate([self.boxes, order_corners(np.asarray(keep_boxes, dtype=np.float64))])

    def best(self, boxes: np.ndarray, threshold: float) -> list[tuple[int, float] | None]:
        """For each box: ``(index, IoU)`` of the best-overlapping pool entry when IoU ``>= threshold``."""
        if len(self.rles) == 0 or len(boxes) == 0:
            return [None] * len(boxes)
        ious = iou_matrix(boxes, self.boxes)
        out: list[tuple[int, float] | None] = []
        for row in ious:
            j = int(np.argmax(row))  # first on ties
            out.append((j, float(row[j])) if row[j] >= threshold else None)
        return out


def _object_boxes(entries: list[dict[str, Any]], width: int, height: int) -> np.ndarray:
    boxes = np.zeros((len(entries), 4), dtype=np.float64)
    for i, obj in enumerate(entries):
        box = obj.get("bbox")
        values = [math.nan] * 4 if box is None or len(box) != 4 else [math.nan if v is None else float(v) for v in box]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"object id {obj.get('id')} has no usable bbox ({box!r})")
        boxes[i] = values
    return clip_boxes(order_corners(boxes), width, height) if len(boxes) else boxes


def assign_masks(
    entries: list[dict[str, Any]],
    width: int,
    height: int,
    region: MaskPool,
    detector: MaskPool,
    segment: Any = None,
    *,
    match_iou: float = 0.65,
) -> list[dict[str, Any]]:
    """``MASK`` dicts for ``entries`` (objects then floating objects): region mask, detector mask, else SAM.

    ``segment(boxes_xyxy) -> list[RLE]`` segments the remaining objects' boxes (called once, only when some
    object needs it); ``None`` makes that case a ``ValueError``.
    """
    boxes = _object_boxes(entries, width, height)
    out: list[dict[str, Any] | None] = [None] * len(entries)
    rest = list(range(len(entries)))
    for pool in (region, detector):
        hits = pool.best(boxes[rest], match_iou) if rest else []
        still = []
        for i, hit in zip(rest, hits, strict=True):
            if hit is None:
                still.append(i)
                continue
            j, iou = hit
            out[i] = {
                "object_id": int(entries[i]["id"]),
                "bbox": clip_boxes(pool.boxes[j], width, height)[0].tolist(),
                "segmentation": pool.rles[j],
                "segmentation_source": pool.sources[j],
                "match_iou": iou,
            }
        rest = still
    if rest:
        if segment is None:
            ids = [entries[i].get("id") for i in rest]
            raise ValueError(f"object ids {ids} match no region or detector mask and no `sam` model is configured")
        rles = list(segment(boxes[rest]))
        if len(rles) != len(rest):
            raise RuntimeError(f"SAM returned {len(rles)} masks for {len(rest)} boxes")
        for i, seg in zip(rest, rles, strict=True):
            out[i] = {
                "object_id": int(entries[i]["id"]),
                "bbox": boxes[i].tolist(),
                "segmentation": seg,
                "segmentation_source": "sam",
                "match_iou": None,
            }
    return [m for m in out if m is not None]


@dataclass
class Masks(Stage):
    """A mask for every object and floating object: SA-1B match, detector mask, else SAM with the xyxy box."""

    name: ClassVar[str] = "masks"
    requires: ClassVar[tuple[str, ...]] = ("level2", "sa1b", "sam_masks", "images")
    level: ClassVar[int | None] = 3
    schema: ClassVar[pa.Schema] = MASKS_SCHEMA
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("sam",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=4)

    match_iou: float = 0.65  # spec step 21: region/detector mask taken when box IoU >= 0.65
    max_boxes_per_call: int = 64  # SAM prompts per decoder call (the reference sent all boxes at once, §14.17)
    region_tables: dict[str, str] = field(
        default_factory=lambda: {"sa1b": "sa1b", "sam_masks": "sam"}
    )  # step 21.1: annotation tables (`annotations` column) -> segmentation_source
    detector_mask_tables: list[str] = field(default_factory=list)  # step 21.2: side tables with boxes + masks

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.match_iou) <= 1.0:
            raise ValueError(f"masks: match_iou must be in [0, 1], got {self.match_iou!r}")
        if int(self.max_boxes_per_call) < 1:
            raise ValueError(f"masks: max_boxes_per_call must be at least 1, got {self.max_boxes_per_call!r}")
        bad = {t: s for t, s in dict(self.region_tables).items() if s not in SEGMENTATION_SOURCES}
        if bad:
            raise ValueError(f"masks: region_tables sources must be among {list(SEGMENTATION_SOURCES)}, got {bad}")

    def inputs(self) -> tuple[str, ...]:
        return ("images", "level2", *self.region_tables, *self.detector_mask_tables)

    def setup(self) -> None:
        self.sam = None
        if "sam" in self.models:
            from grand_engine.models.base import load_adapter

            self.sam = load_adapter(self.models["sam"], gpus=self.resources.gpus)

    def process(self, unit: UnitInput) -> StageResult:
        return self.per_image(unit, lambda image_id: self.process_image(unit, image_id))

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        level2 = unit.input_row("level2", image_id)
        width, height = level2.get("width"), level2.get("height")
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise ValueError(f"image {image_id!r} has no valid size (width={width!r}, height={height!r})")
        size = [height, width]
        region = MaskPool.empty()
        for table, source in self.region_tables.items():
            anns = unit.input_row(table, image_id).get("annotations") or []
            region.add(
                [a.get("bbox") for a in anns],
                [a.get("segmentation") for a in anns],
                source,
                f"{table}.annotations",
                size,
            )
        detector = MaskPool.empty()
        for table in self.detector_mask_tables:
            row = unit.input_row(table, image_id)
            boxes, masks = row.get("boxes") or [], row.get("masks") or []
            if len(boxes) != len(masks):
                raise ValueError(f"{table}: {len(boxes)} boxes but {len(masks)} masks")
            detector.add(boxes, masks, "detector", f"{table}.masks", size)

        entries = [o for o in (level2.get("objects") or []) + (level2.get("floating_objects") or []) if o]

        def segment(boxes: np.ndarray) -> list[dict[str, Any]]:
            image = unit.pixels(image_id)
            if tuple(image.shape[:2]) != (height, width):
                raise ValueError(f"decoded image is {image.shape[1]}x{image.shape[0]}, level2 says {width}x{height}")
            return self.sam.segment_boxes(image, boxes, max_boxes_per_call=int(self.max_boxes_per_call))

        masks = assign_masks(
            entries,
            width,
            height,
            region,
            detector,
            segment if getattr(self, "sam", None) is not None else None,
            match_iou=float(self.match_iou),
        )
        return {"image_id": image_id, "masks": masks}
