"""``sam_classify``: open-vocabulary labels for the image's SAM masks (OV-SAM slot, GranD step 9).

The reference prompted Open-Vocabulary SAM with the box of every SA-1B annotation covering more than 1 % of the
image and kept its top-1 LVIS class when the score was above 0.1. Here a CLIP model (``clip`` slot) classifies a
crop of each such region over the LVIS vocabulary:

* **masks** — the image's SA-1B annotations (``sa1b``) when it has any, else the ``sam_masks`` annotations
  (images from a folder). Their ``annotation_ids`` are the ids in whichever table they came from.
* **area filter** (step 9) — a mask is classified when its **box** area ``(x2 - x1) · (y2 - y1)`` is strictly
  greater than ``min_area_fraction`` of the image area (the reference compared the XYWH box area with the RLE's
  ``H · W``), so a box of exactly 1 % is not.
* **crop** — the box, enlarged about its centre by ``crop_scale`` (1.0 = the box), rounded outwards to whole
  pixels and clipped to the image (at least one pixel). With ``mask_outside`` the pixels outside the mask are
  filled with CLIP's mean colour, so the classifier sees the region rather than its context.
* **pooled** (``mode: pooled``, not the reference's) — instead of one CLIP pass per crop, the whole image goes
  through the model once and each region's embedding is pooled from the patch tokens it covers
  (:mod:`grand_engine.models.pooling`): the crop's bounds above, or the mask itself with ``mask_outside``. One
  image pass replaces about 50 crop passes; it needs SigLIP's attention-pooling head (``hf_clip``).
* **classification** — ``softmax(100 · cos)`` of the crop against ``template`` filled with each vocabulary entry
  in readable form (``sandal (type of shoe)``); the top-1 entry and its probability, kept when the probability is
  ``> threshold`` (step 9: 0.1). The stored label is the raw vocabulary entry (``sandal_(type_of_shoe)``), like
  ``detect_lvis``; ``level1`` normalises it. Text embeddings are computed once per worker.

Rows list the kept masks in annotation order: ``boxes`` (the annotation's box), ``scores``, ``labels``,
``annotation_ids``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import box_area, clip_boxes, order_corners
from grand_engine.io import rle as rle_lib
from grand_engine.labels import normalise_label, read_category_file
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import DETECTIONS_FIELDS, table_schema

SAM_CLASSIFY_SCHEMA = table_schema(*DETECTIONS_FIELDS, ("annotation_ids", pa.list_(pa.int64())), version="1")
"""The ``sam_classify`` table: detector columns plus the id of each classified annotation."""

CLASSIFIER_MODES = ("crops", "pooled")
"""How a crop classifier reads its regions: one image-tower pass per crop (the reference's), or one per image."""

CLIP_MEAN_RGB = (122, 116, 104)
"""CLIP's normalisation mean (0.481, 0.458, 0.408) as 8-bit RGB: the fill outside a mask (``mask_outside``)."""


def image_masks(unit: UnitInput, image_id: str) -> tuple[list[dict[str, Any]], str]:
    """The annotations to classify for one image and the table they came from (``sa1b`` or ``sam_masks``)."""
    sa1b = unit.input_row("sa1b", image_id).get("annotations") or []
    if sa1b:
        return list(sa1b), "sa1b"
    if "sam_masks" in unit.inputs:
        return list(unit.input_row("sam_masks", image_id).get("annotations") or []), "sam_masks"
    return [], "sam_masks"


def select_by_area(annotations: list[dict[str, Any]], width: int, height: int, min_fraction: float) -> list[int]:
    """Indices of the annotations whose box area is strictly greater than ``min_fraction`` of ``width·height``."""
    if not annotations:
        return []
    boxes = np.array(
        [a.get("bbox") if a.get("bbox") is not None else (math.nan,) * 4 for a in annotations], dtype=np.float64
    ).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    areas = np.where(finite, box_area(np.where(finite[:, None], boxes, 0.0)), 0.0)
    return np.flatnonzero(finite & (areas > min_fraction * float(width) * float(height))).tolist()


def crop_bounds(box: Any, width: int, height: int, scale: float = 1.0) -> tuple[int, int, int, int]:
    """Integer ``(x1, y1, x2, y2)`` pixel bounds of a xyxy box enlarged about its centre by ``scale``, rounded
    outwards and clipped to the image; at least one pixel wide and high."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    left = min(max(math.floor(cx - hw), 0), width - 1)
    top = min(max(math.floor(cy - hh), 0), height - 1)
    right = max(min(math.ceil(cx + hw), width), left + 1)
    bottom = max(min(math.ceil(cy + hh), height), top + 1)
    return left, top, right, bottom


def region_crop(
    pixels: np.ndarray, annotation: dict[str, Any], scale: float = 1.0, mask_outside: bool = False
) -> np.ndarray:
    """The crop of one annotation (see the module docstring)."""
    height, width = pixels.shape[:2]
    x1, y1, x2, y2 = crop_bounds(annotation["bbox"], width, height, scale)
    crop = pixels[y1:y2, x1:x2]
    if mask_outside:
        mask = rle_lib.decode(annotation["segmentation"])
        if mask.shape != (height, width):
            raise ValueError(f"mask of annotation {annotation.get('id')} is {mask.shape}, image is {(height, width)}")
        crop = np.where(mask[y1:y2, x1:x2, None], crop, np.array(CLIP_MEAN_RGB, dtype=np.uint8))
    return np.ascontiguousarray(crop, dtype=np.uint8)


@dataclass
class SamClassifyStage(Stage):
    """Classify the crops of SA-1B (or generated) masks over the LVIS vocabulary (OV-SAM slot, step 9)."""

    name: ClassVar[str] = "sam_classify"
    requires: ClassVar[tuple[str, ...]] = ("images", "sa1b", "sam_masks")
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = SAM_CLASSIFY_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("clip",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=8)

    min_area_fraction: float = 0.01  # step 9: only masks whose box covers > 1 % of the image
    threshold: float = 0.1  # step 9: keep the top-1 class when its score is > 0.1
    template: str = "a photo of a {}."  # CLIP text for each vocabulary entry (`{}` = readable name)
    vocabulary_file: str = "lvis_v1_categories.txt"  # step 9: the LVIS v1 classifier (1,203 classes)
    crop_scale: float = 1.0  # crop = the box enlarged by this factor about its centre
    mask_outside: bool = False  # fill pixels outside the mask with CLIP's mean colour
    mode: str = "crops"  # crops (step 9: one CLIP pass per crop) | pooled (one pass per image, pooled per region)

    clip: Any = collaborator()  # the CLIP adapter; loaded from the `clip` slot when None

    def __post_init__(self) -> None:
        for name in ("min_area_fraction", "threshold", "crop_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"sam_classify: {name} must be a finite number, got {value!r}")
        if self.crop_scale <= 0:
            raise ValueError(f"sam_classify: crop_scale must be positive, got {self.crop_scale!r}")
        if self.mode not in CLASSIFIER_MODES:
            raise ValueError(f"sam_classify: mode must be one of {CLASSIFIER_MODES}, got {self.mode!r}")
        if "{}" not in self.template:
            raise ValueError(f"sam_classify: template must contain '{{}}', got {self.template!r}")

    def setup(self) -> None:
        self.vocabulary = list(read_category_file(self.vocabulary_file))
        if not self.vocabulary:
            raise ValueError(f"sam_classify: vocabulary file {self.vocabulary_file!r} is empty")
        if self.clip is None:
            self.clip = self.load_model("clip")
        texts = [self.template.replace("{}", normalise_label(raw).display) for raw in self.vocabulary]
        self.text_embeds = self.clip.encode_texts(texts)

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids``; the crops of the whole batch go through CLIP together."""
        from grand_engine.models.clip import softmax_scores

        crops: list[np.ndarray] = []
        owners: list[tuple[int, dict[str, Any], int, int]] = []  # (image index, annotation, width, height)
        pooled: dict[int, tuple[np.ndarray, list[Any]]] = {}  # mode pooled: image index -> (pixels, regions)
        for k, image_id in enumerate(image_ids):
            image = unit.image_row(image_id)
            width, height = int(image["width"]), int(image["height"])
            annotations, _ = image_masks(unit, image_id)
            chosen = select_by_area(annotations, width, height, self.min_area_fraction)
            if not chosen:
                continue
            pixels = unit.pixels(image_id)
            if pixels.shape[:2] != (height, width):
                raise ValueError(
                    f"image {image_id!r}: decoded {pixels.shape[1]}×{pixels.shape[0]}, images table {width}×{height}"
                )
            for i in chosen:
                if self.mode == "pooled":
                    pooled.setdefault(k, (pixels, []))[1].append(self._region(annotations[i], width, height))
                else:
                    crops.append(region_crop(pixels, annotations[i], self.crop_scale, self.mask_outside))
                owners.append((k, annotations[i], width, height))
        rows = [{"image_id": i, "boxes": [], "scores": [], "labels": [], "annotation_ids": []} for i in image_ids]
        if not owners:
            return rows
        if self.mode == "pooled":
            order = sorted(pooled)  # owners are in image order, so the pooled rows line up with them
            parts = self.clip.encode_regions([pooled[k][0] for k in order], [pooled[k][1] for k in order])
            embeds = np.concatenate(parts)
        else:
            embeds = self.clip.encode_images(crops)
        probs = softmax_scores(embeds, self.text_embeds)
        best = probs.argmax(axis=1)
        for (k, annotation, width, height), j, p in zip(owners, best, probs[np.arange(len(best)), best], strict=True):
            if not np.float32(p) > np.float32(self.threshold):
                continue
            row = rows[k]
            box = clip_boxes(order_corners(np.asarray(annotation["bbox"], dtype=np.float64)[None]), width, height)[0]
            row["boxes"].append([float(v) for v in box])
            row["scores"].append(float(p))
            row["labels"].append(self.vocabulary[int(j)])
            row["annotation_ids"].append(int(annotation["id"]))
        return rows

    def _region(self, annotation: dict[str, Any], width: int, height: int) -> Any:
        """What ``mode: pooled`` pools for one annotation: the crop's pixel bounds, or its mask (``mask_outside``)."""
        if self.mask_outside:
            mask = rle_lib.decode(annotation["segmentation"])
            if mask.shape != (height, width):
                raise ValueError(
                    f"mask of annotation {annotation.get('id')} is {mask.shape}, image is {(height, width)}"
                )
            if mask.any():
                return np.ascontiguousarray(mask)
        return np.asarray(crop_bounds(annotation["bbox"], width, height, self.crop_scale), dtype=np.float64)
