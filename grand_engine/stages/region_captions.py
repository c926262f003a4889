"""``region_captions``: boxes with short descriptions (GRiT slot, GranD step 8).

The reference ran GRiT (DenseCap task) and kept regions scoring above 0.7, at most 256 per image; its
descriptions become object attributes in ``level1``. The default model here is Florence-2
``<DENSE_REGION_CAPTION>`` through the ``vlm`` slot.

Per image: every region the model returns, with its box (xyxy pixels, corners ordered, clipped to the image) and
its description (whitespace collapsed). Regions with an empty description or a box of zero area are dropped.
Florence-2 attaches **no confidence** to its regions: each gets ``default_score`` (1.0), so ``score_threshold``
(GRiT's 0.7, kept for models that do score regions) keeps them all, and ``level1``'s region-caption threshold
(0.3) does too. Regions keep the model's order; at most ``max_regions`` of them are kept (step 8: 256).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import clip_boxes, order_corners
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import DETECTIONS_FIELDS, table_schema

REGION_CAPTIONS_SCHEMA = table_schema(
    DETECTIONS_FIELDS[0],  # boxes
    DETECTIONS_FIELDS[1],  # scores
    ("descriptions", pa.list_(pa.string())),
    version="1",
)
"""The ``region_captions`` table: ``boxes``, ``scores`` and ``descriptions``, aligned."""


def region_row(
    image_id: str,
    regions: list[tuple[Any, str, float]],
    width: int,
    height: int,
    *,
    score_threshold: float,
    max_regions: int,
) -> dict[str, Any]:
    """One row from ``(box, description, score)`` regions (see the module docstring for the rules)."""
    boxes: list[list[float]] = []
    scores: list[float] = []
    descriptions: list[str] = []
    for box, text, score in regions:
        description = " ".join(str(text or "").split())
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
        if not description or arr.size != 4 or not np.isfinite(arr).all() or not math.isfinite(score):
            continue
        if not np.float32(score) >= np.float32(score_threshold):
            continue
        clipped = clip_boxes(order_corners(arr[None]), width, height)[0]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            continue
        boxes.append([float(v) for v in clipped.astype(np.float32)])
        scores.append(float(score))
        descriptions.append(description)
        if max_regions > 0 and len(boxes) >= max_regions:
            break
    return {"image_id": image_id, "boxes": boxes, "scores": scores, "descriptions": descriptions}


@dataclass
class RegionCaptionsStage(Stage):
    """Dense region captions (GRiT slot, step 8); Florence-2 ``<DENSE_REGION_CAPTION>`` by default."""

    name: ClassVar[str] = "region_captions"
    requires: ClassVar[tuple[str, ...]] = ("images",)
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = REGION_CAPTIONS_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("vlm",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=8)

    score_threshold: float = 0.7  # step 8: GRiT test score threshold 0.7 (regions without a score get default_score)
    default_score: float = 1.0  # score of a region from a model that gives none (Florence-2)
    max_regions: int = 256  # step 8: at most 256 detections per image; 0 = no limit
    max_new_tokens: int = 1024  # generation budget of the dense-caption task

    vlm: Any = collaborator()  # the dense-region-caption adapter; loaded from the `vlm` slot when None

    def __post_init__(self) -> None:
        for name in ("score_threshold", "default_score"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"region_captions: {name} must be a finite number, got {value!r}")
        if isinstance(self.max_regions, bool) or not isinstance(self.max_regions, int) or self.max_regions < 0:
            raise ValueError(f"region_captions: max_regions must be an integer >= 0, got {self.max_regions!r}")

    def setup(self) -> None:
        if self.vlm is None:
            self.vlm = self.load_model("vlm")

    def _score(self, region: Any) -> float:
        score = getattr(region, "score", None)  # adapters that score regions expose `score`
        return self.default_score if score is None else float(score)

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids`` (one dense-caption call for the batch)."""
        images = [unit.pixels(i) for i in image_ids]
        per_image = self.vlm.dense_region_captions(images, max_new_tokens=self.max_new_tokens)
        rows = []
        for image_id, image, regions in zip(image_ids, images, per_image, strict=True):
            height, width = image.shape[:2]
            scored = [(r.box, r.text, self._score(r)) for r in regions]
            rows.append(
                region_row(
                    image_id,
                    scored,
                    width,
                    height,
                    score_threshold=self.score_threshold,
                    max_regions=self.max_regions,
                )
            )
        return rows
