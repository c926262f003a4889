"""``source_masks``: a SAM mask for every source entity that has only a box (Flickr30K Entities' phrases).

For each ``source_records`` row, the entities with a ``bbox`` but neither a ``segmentation`` nor ``polygons`` are
segmented by the ``sam`` slot with their own **xyxy** box as the prompt (single-mask output, the same call the
``masks`` stage makes for objects without a region mask; the image is encoded once and its boxes go through the
decoder at most ``max_boxes_per_call`` at a time). GLaMM's ``flickr_mergedGT`` files store exactly such a mask per
phrase (``sam_mask``), made from the phrase's merged box. Rows whose entities all have a region already get an
empty ``masks`` list without the image being decoded, and the SAM checkpoint is loaded only when the first box
needs it — so one manifest serves the three sources, and an OpenPSG or RefCOCOg run never loads SAM.

Output: ``masks`` — one entry per segmented entity (``source_records`` order) with its ``key``, ``object_id``,
``segmentation`` (COCO RLE of the image's size) and SAM's predicted IoU ``score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.runtime.stage import Resources, Stage, UnitInput, collaborator
from grand_engine.schema import RLE, table_schema

SOURCE_MASK = pa.struct(
    [
        ("key", pa.string()),  # the entity's key (its referring phrase)
        ("object_id", pa.int64()),
        ("segmentation", RLE),
        ("score", pa.float32()),  # SAM's predicted IoU of the mask
    ]
)

SOURCE_MASKS_SCHEMA = table_schema(("masks", pa.list_(SOURCE_MASK)))
"""The ``source_masks`` table."""


def box_only(entity: dict[str, Any]) -> bool:
    """True for an entity SAM must segment: a box and no mask or polygon."""
    return entity.get("bbox") is not None and entity.get("segmentation") is None and entity.get("polygons") is None


@dataclass
class SourceMasks(Stage):
    """SAM masks from the boxes of box-only source entities (module docstring)."""

    name: ClassVar[str] = "source_masks"
    requires: ClassVar[tuple[str, ...]] = ("source_records",)
    schema: ClassVar[pa.Schema] = SOURCE_MASKS_SCHEMA
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("sam",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=1)

    max_boxes_per_call: int = 64  # decoder calls of at most this many boxes (the masks stage's default)

    sam: Any = collaborator()  # the SAM adapter (``segment_boxes_with_scores``); loaded on first use when None

    def segmenter(self) -> Any:
        """The SAM adapter, loaded the first time a box needs it (module docstring)."""
        if self.sam is None:
            self.sam = self.load_model("sam")
        return self.sam

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = unit.image_row(image_id)
        todo = [e for e in row.get("entities") or [] if box_only(e)]
        if not todo:
            return {"image_id": image_id, "masks": []}
        image = unit.pixels(image_id)
        if tuple(image.shape[:2]) != (row["height"], row["width"]):
            raise ValueError(
                f"decoded image is {image.shape[1]}x{image.shape[0]}, source_records says {row['width']}x{row['height']}"
            )
        masks, scores = self.segmenter().segment_boxes_with_scores(
            image, [e["bbox"] for e in todo], max_boxes_per_call=int(self.max_boxes_per_call)
        )
        if len(masks) != len(todo):
            raise RuntimeError(f"SAM returned {len(masks)} masks for {len(todo)} boxes")
        return {
            "image_id": image_id,
            "masks": [
                {"key": e["key"], "object_id": e.get("object_id"), "segmentation": m, "score": float(s)}
                for e, m, s in zip(todo, masks, scores, strict=True)
            ],
        }
