"""``sam_masks``: SAM automatic masks for images that have no SA-1B annotations (image folders).

SA-1B images come with their masks (the ``sa1b`` table); GranD's OV-SAM step (9) and the mask step (21) rely on
them. A folder of ordinary images has none, so this stage makes them with segment-anything's automatic mask
generator (``sam`` slot, SAM ViT-H by default), with its default settings as parameters.

* An image whose ``sa1b`` row has at least one annotation gets a row with **zero annotations** and is not run
  through SAM (``only_without_sa1b``; set it to false to run SAM on every image).
* Otherwise every generated mask becomes one annotation in the ``sa1b`` table format: ``id`` ``0 … n-1`` in the
  generator's order (ids are per image, unlike SA-1B's global ids), ``bbox`` the mask's tight xyxy box,
  ``area`` its pixel count, ``predicted_iou`` and ``stability_score`` from SAM, ``point_coords`` empty,
  ``crop_box`` the whole image (no crop layers), ``segmentation`` the compressed RLE.

The checkpoint is checked in ``setup()`` (a missing file fails before any work) but loaded only when the first
image without SA-1B masks arrives, so SA-1B shards never pay for it. A pipeline that only reads SA-1B shards
may leave the ``sam`` slot empty: an image that would need SAM then gets an error row saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.models.base import ModelNotFoundError, check_checkpoint
from grand_engine.runtime.stage import Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema
from grand_engine.stages.sa1b import ANNOTATION

SAM_MASKS_SCHEMA = table_schema(
    ("annotations", pa.list_(ANNOTATION)),
    ("num_annotations", pa.int32()),
    ("image_width", pa.int32()),
    ("image_height", pa.int32()),
    version="1",
)
"""The ``sam_masks`` table: the ``sa1b`` table format."""


def has_sa1b_masks(sa1b_row: dict[str, Any]) -> bool:
    """True when the image's ``sa1b`` row holds at least one annotation."""
    return int(sa1b_row.get("num_annotations") or 0) > 0 or bool(sa1b_row.get("annotations"))


def generated_annotations(masks: list[dict[str, Any]], width: int, height: int) -> list[dict[str, Any]]:
    """``sa1b``-format annotations from the SAM adapter's generated masks (ids ``0 … n-1``)."""
    out = []
    for i, m in enumerate(masks):
        out.append(
            {
                "id": i,
                "bbox": [float(v) for v in m["bbox"]],
                "area": float(m["area"]),
                "predicted_iou": float(m["predicted_iou"]),
                "stability_score": float(m["stability_score"]),
                "point_coords": [],
                "crop_box": [0.0, 0.0, float(width), float(height)],
                "segmentation": {
                    "size": [int(v) for v in m["segmentation"]["size"]],
                    "counts": m["segmentation"]["counts"],
                },
            }
        )
    return out


@dataclass
class SamMasksStage(Stage):
    """SAM automatic masks, only for images without SA-1B annotations."""

    name: ClassVar[str] = "sam_masks"
    requires: ClassVar[tuple[str, ...]] = ("images", "sa1b")
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = SAM_MASKS_SCHEMA
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("sam",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.5, cpus=1.0, batch_size=1)

    points_per_side: int = 32  # segment-anything default point grid (32 × 32)
    pred_iou_thresh: float = 0.88  # segment-anything default
    stability_score_thresh: float = 0.95  # segment-anything default
    box_nms_thresh: float = 0.7  # segment-anything default
    min_mask_region_area: int = 0  # segment-anything default (no small-region clean-up)
    points_per_batch: int = 64  # segment-anything default
    only_without_sa1b: bool = True  # run SAM only where the image has no SA-1B annotations

    sam: Any = collaborator()  # the SAM adapter; loaded on the first image that needs it (SA-1B images do not)

    def setup(self) -> None:
        spec = self.models.get("sam")
        if spec is not None:
            check = check_checkpoint(spec)
            if not check.found:
                raise ModelNotFoundError(f"model {spec.id!r} (sam): {check.message}")

    def _model(self) -> Any:
        if self.sam is None:
            if self.models.get("sam") is None:
                raise ValueError(
                    "the image has no SA-1B annotations and stage 'sam_masks' has no model in its 'sam' slot"
                )
            self.sam = self.load_model("sam")
        return self.sam

    def needs_sam(self, unit: UnitInput, image_id: str) -> bool:
        """Whether SAM runs on this image."""
        return not (self.only_without_sa1b and has_sa1b_masks(unit.input_row("sa1b", image_id)))

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        """The row of one image."""
        image = unit.image_row(image_id)
        width, height = int(image["width"]), int(image["height"])
        annotations: list[dict[str, Any]] = []
        if self.needs_sam(unit, image_id):
            model = self._model()
            pixels = unit.pixels(image_id)
            if pixels.shape[:2] != (height, width):
                raise ValueError(
                    f"decoded image is {pixels.shape[1]}×{pixels.shape[0]}, the images table says {width}×{height}"
                )
            generated = model.generate(
                pixels,
                points_per_side=self.points_per_side,
                pred_iou_thresh=self.pred_iou_thresh,
                stability_score_thresh=self.stability_score_thresh,
                box_nms_thresh=self.box_nms_thresh,
                min_mask_region_area=self.min_mask_region_area,
                points_per_batch=self.points_per_batch,
            )
            annotations = generated_annotations(generated, width, height)
        return {
            "image_id": image_id,
            "annotations": annotations,
            "num_annotations": len(annotations),
            "image_width": width,
            "image_height": height,
        }
