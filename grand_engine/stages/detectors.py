"""The level-1 detector slots (GranD steps 4–7): ``detect_closed``, ``detect_lvis``, ``detect_ov``, ``detect_ov2``.

Every one writes the detector side-table format (:data:`grand_engine.schema.DETECTIONS_FIELDS`): per image
``boxes`` (xyxy pixels, corners ordered, clipped to the image), ``scores`` and ``labels``, aligned and sorted
by descending score (ties keep the model's order). Labels are stored **raw**, in the vocabulary's own spelling;
``level1`` normalises them once.

* ``detect_closed`` (Co-DETR slot, step 4, COCO-80) and ``detect_lvis`` (EVA-02 slot, step 5, LVIS-1203) detect
  over a fixed vocabulary, the packaged category file ``vocabulary_file``. With a closed-set detector (family
  ``detector``) the labels are the checkpoint's own class names and the file is not used. With an
  open-vocabulary detector (families ``owl``, ``grounding_dino``; OWLv2 is the default of ``detect_lvis``) each
  vocabulary entry is queried in readable form — :func:`grand_engine.labels.normalise_label` ``.display``,
  e.g. ``sandal (type of shoe)`` for ``sandal_(type_of_shoe)`` — and the stored label is the raw entry.
* ``detect_ov`` (OWL-ViT slot, step 6) and ``detect_ov2`` (POMP slot, step 7) query an open-vocabulary detector
  with the image's ``tagging`` tags followed by ``extra_queries`` (``trees``: both reference steps append it),
  deduplicated in that order; the stored label is the query string. An image with no query at all gets an empty
  row.

Score filters keep the reference's low inference thresholds as parameters: step 4 keeps every box with score
``> 0`` (``threshold`` 0.0, strict), step 5 ``> 0.05`` (strict), step 6 ``>= 0.05``, step 7 the detectron2
test threshold 0.05 (strict ``>``). ``max_detections`` caps the boxes kept per image (best first), as the
reference's frameworks did (mmdet ``max_per_img`` 100 for Co-DETR, detectron2 300 for the LVIS models, the
576 patch predictions of OWL-ViT B/32); ``0`` means no cap. It bounds the side tables when a stronger model
with more predictions (OWLv2: 3,600 patches) sits in a slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import clip_boxes, order_corners
from grand_engine.labels import normalise_label, read_category_file
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import DETECTIONS_FIELDS, table_schema

DETECTIONS_SCHEMA = table_schema(*DETECTIONS_FIELDS, version="1")
"""The table of every detector slot."""


def detections_row(
    image_id: str,
    boxes: Any,
    scores: Any,
    labels: Sequence[str],
    width: int,
    height: int,
    *,
    threshold: float | None = None,
    strict: bool = False,
    max_detections: int = 0,
) -> dict[str, Any]:
    """One detector row: non-finite boxes/scores dropped, corners ordered, boxes clipped to ``width×height``,
    the score filter applied (``> threshold`` when ``strict``, else ``>=``), sorted by descending score (stable)
    and cut to ``max_detections`` (``0`` = all)."""
    box_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    score_arr = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = list(labels)
    if not len(box_arr) == len(score_arr) == len(labels):
        raise ValueError(f"{len(box_arr)} boxes, {len(score_arr)} scores and {len(labels)} labels do not align")
    keep = np.isfinite(box_arr).all(axis=1) & np.isfinite(score_arr)
    if threshold is not None:
        thr = np.float32(threshold)
        keep &= (score_arr > thr) if strict else (score_arr >= thr)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-score_arr[idx], kind="stable")]
    if max_detections > 0:
        idx = idx[:max_detections]
    out_boxes = clip_boxes(order_corners(box_arr[idx]), width, height).astype(np.float32)
    return {
        "image_id": image_id,
        "boxes": out_boxes.tolist(),
        "scores": score_arr[idx].tolist(),
        "labels": [str(labels[i]) for i in idx],
    }


def query_text(raw: str) -> str:
    """The readable query for a raw vocabulary entry: ``sandal_(type_of_shoe)`` → ``sandal (type of shoe)``."""
    return normalise_label(raw).display


def tag_queries(tags: Sequence[str] | None, extra: Sequence[str]) -> list[str]:
    """The open-vocabulary queries of one image: its tags then ``extra``, blank entries dropped, whitespace
    collapsed, deduplicated case-insensitively in first-seen order (steps 6/7: tags ∪ {``trees``})."""
    seen: dict[str, str] = {}
    for query in [*(tags or []), *extra]:
        text = " ".join(str(query or "").split())
        if text:
            seen.setdefault(text.lower(), text)
    return list(seen.values())


@dataclass
class _DetectorStage(Stage):
    """Shared set-up and batching of the detector slots."""

    requires: ClassVar[tuple[str, ...]] = ("images",)
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = DETECTIONS_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("detector",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=8)
    strict_threshold: ClassVar[bool] = False  # the reference step keeps score > threshold (else >=)

    threshold: float = 0.05
    max_detections: int = 0

    detector: Any = collaborator()  # the detector adapter; loaded from the `detector` slot when None

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ValueError(f"{self.name}: threshold must be a number, got {self.threshold!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"{self.name}: threshold must be finite, got {self.threshold!r}")
        md = self.max_detections
        if isinstance(md, bool) or not isinstance(md, int) or md < 0:
            raise ValueError(f"{self.name}: max_detections must be an integer >= 0, got {md!r}")

    def setup(self) -> None:
        if self.detector is None:
            self.detector = self.load_model("detector")
        self.prepare()

    def prepare(self) -> None:
        """Per-worker preparation after the model is loaded."""

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids`` (one detector call for the batch)."""
        images = [unit.pixels(i) for i in image_ids]
        results = self.run_model(unit, image_ids, images)
        rows = []
        for image_id, image, (det, labels) in zip(image_ids, images, results, strict=True):
            height, width = image.shape[:2]
            rows.append(
                detections_row(
                    image_id,
                    det.boxes,
                    det.scores,
                    labels,
                    width,
                    height,
                    threshold=self.threshold,
                    strict=self.strict_threshold,
                    max_detections=self.max_detections,
                )
            )
        return rows

    def run_model(self, unit: UnitInput, image_ids: list[str], images: list[np.ndarray]) -> list[tuple[Any, list]]:
        """``(Detections, stored labels)`` per image."""
        raise NotImplementedError


@dataclass
class _VocabularyDetector(_DetectorStage):
    """A detector over a fixed vocabulary: a closed-set model's own classes, or a packaged list queried."""

    vocabulary_file: str = ""

    def prepare(self) -> None:
        self.open_vocabulary = hasattr(self.detector, "set_vocabulary")
        self.vocabulary: list[str] = []
        if self.open_vocabulary:
            if not self.vocabulary_file:
                raise ValueError(f"{self.name}: an open-vocabulary detector needs `vocabulary_file`")
            self.vocabulary = list(read_category_file(self.vocabulary_file))
            self.detector.set_vocabulary([query_text(raw) for raw in self.vocabulary])

    def run_model(self, unit: UnitInput, image_ids: list[str], images: list[np.ndarray]) -> list[tuple[Any, list]]:
        # Ask the model for everything at its own inclusive threshold; the stage applies its (strict) rule.
        if self.open_vocabulary:
            dets = self.detector.detect_vocabulary(images, threshold=self.threshold)
            return [(d, [self.vocabulary[int(i)] for i in d.label_ids]) for d in dets]
        dets = self.detector.detect(images, threshold=self.threshold)
        return [(d, list(d.labels)) for d in dets]


@dataclass
class DetectClosed(_VocabularyDetector):
    """Co-DETR slot (step 4): COCO-80 detection."""

    name: ClassVar[str] = "detect_closed"
    strict_threshold: ClassVar[bool] = True  # step 4: every box with score > 0

    threshold: float = 0.0  # step 4: no score filtering (score > 0.0)
    max_detections: int = 100  # step 4: Co-DETR's mmdet test config keeps max_per_img = 100
    vocabulary_file: str = "coco_categories.txt"  # step 4: COCO-80 (used when an open-vocabulary model fills the slot)


@dataclass
class DetectLvis(_VocabularyDetector):
    """EVA-02 slot (step 5): LVIS-1203 detection (OWLv2 queried with every LVIS name by default)."""

    name: ClassVar[str] = "detect_lvis"
    strict_threshold: ClassVar[bool] = True  # step 5: keep score > 0.05
    default_resources: ClassVar[Resources] = Resources(gpus=0.5, cpus=1.0, batch_size=4)

    threshold: float = 0.05  # step 5: keep instances with score > 0.05
    max_detections: int = 300  # step 5: detectron2's LVIS test config keeps 300 detections per image
    vocabulary_file: str = "lvis_v1_categories.txt"  # step 5: LVIS v1, 1,203 names


@dataclass
class _TagQueryDetector(_DetectorStage):
    """An open-vocabulary detector queried with each image's tags plus fixed extra queries."""

    requires: ClassVar[tuple[str, ...]] = ("images", "tagging")

    extra_queries: tuple[str, ...] = ("trees",)  # steps 6/7: the fixed extra query "trees"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.extra_queries, str):
            raise ValueError(f"{self.name}: extra_queries must be a list of strings, got {self.extra_queries!r}")
        self.extra_queries = tuple(str(q) for q in self.extra_queries)

    def prepare(self) -> None:
        if not hasattr(self.detector, "detect") or not hasattr(self.detector, "set_vocabulary"):
            raise ValueError(f"{self.name}: the 'detector' slot needs an open-vocabulary family (owl, grounding_dino)")

    def queries(self, unit: UnitInput, image_id: str) -> list[str]:
        """The queries of one image: its tags, then ``extra_queries``."""
        return tag_queries(unit.input_row("tagging", image_id).get("tags"), self.extra_queries)

    def run_model(self, unit: UnitInput, image_ids: list[str], images: list[np.ndarray]) -> list[tuple[Any, list]]:
        queries = [self.queries(unit, i) for i in image_ids]
        dets = self.detector.detect(images, queries, threshold=self.threshold)
        return [(d, list(d.labels)) for d in dets]


@dataclass
class DetectOV(_TagQueryDetector):
    """OWL-ViT slot (step 6): open-vocabulary detection queried with the tags + "trees"."""

    name: ClassVar[str] = "detect_ov"

    threshold: float = 0.05  # step 6: keep score >= 0.05
    max_detections: int = 576  # step 6: OWL-ViT B/32 at 768² makes 576 box predictions, so never more


@dataclass
class DetectOV2(_TagQueryDetector):
    """POMP slot (step 7): a second open-vocabulary detector queried with the tags + "trees"."""

    name: ClassVar[str] = "detect_ov2"
    strict_threshold: ClassVar[bool] = True  # step 7: detectron2 keeps score > the test threshold

    threshold: float = 0.05  # step 7: every cascade stage's test threshold is 0.05
    max_detections: int = 300  # step 7: Detic's test config keeps 300 detections per image
