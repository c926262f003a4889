"""From a CASS label map to region masks, and the merge of stuff regions into level 1.

* :func:`regions_from_segmentation` — one region per class present in the label map: its pixels as a COCO RLE
  (:mod:`grand_engine.io.rle`), tight box, area and score (the mean probability of the class over its pixels).
  Classes covering less than ``min_area_fraction`` of the image are dropped. ``kind`` says whether the class came
  from the stuff list (``"stuff"``) or only from the image's tags (``"tag"``).
* :func:`ovss_row` / :func:`regions_from_row` — the regions as the columns of the ``ovss`` table (aligned lists,
  like a detector table with ``masks``) and back, checking the row.
* :func:`add_stuff_objects` — the level-1 merge. Stuff regions that do not duplicate an existing object become new
  objects with ``sources = ["ovss"]``, their mask as ``segmentation`` and ``segmentation_source = "ovss"``. A region
  duplicates an object when their **mask IoU** is at least ``duplicate_iou``; an object's mask is its
  ``segmentation`` when it has one, else its box as a filled rectangle (the pixels whose centres lie inside it,
  the convention of :func:`grand_engine.io.rle.to_bbox_xyxy`). The label map is a partition, so two regions never
  overlap and need no test against each other.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grand_engine.io import rle as rle_io

__all__ = [
    "OVSS_SOURCE",
    "STUFF_OBJECT_FIELDS",
    "StuffRegion",
    "add_stuff_objects",
    "ovss_row",
    "regions_from_row",
    "regions_from_segmentation",
]

OVSS_SOURCE = "ovss"
"""The ``sources`` entry and ``segmentation_source`` of objects made from CASS regions."""

STUFF_OBJECT_FIELDS = (
    "id",
    "bbox",
    "labels",
    "qualifiers",
    "label",
    "score",
    "sources",
    "attributes",
    "depth",
    "depth_note",
    "segmentation",
    "segmentation_source",
)
"""The fields of a level-1 object record (:data:`grand_engine.schema.OBJECT`), in schema order."""

REGION_KINDS = ("stuff", "tag")


@dataclass(frozen=True)
class StuffRegion:
    """One class's pixels in a CASS label map."""

    label: str
    segmentation: dict[str, Any]  # COCO compressed RLE of the image's size
    bbox: tuple[float, float, float, float]  # tight xyxy box, x2/y2 = last column/row + 1
    area: int  # pixels
    score: float  # mean probability of the class over its pixels
    kind: str = "stuff"  # "stuff" (the class is on the stuff list) or "tag" (only among the image's tags)


def regions_from_segmentation(
    labels: np.ndarray,
    scores: np.ndarray,
    vocabulary: Sequence[str],
    stuff: Collection[str],
    min_area_fraction: float = 0.0,
) -> list[StuffRegion]:
    """Regions of the classes present in ``labels`` (``(H, W)`` indices into ``vocabulary``), in vocabulary order.

    ``scores`` ``(H, W)`` are the per-pixel probabilities of the chosen class; a region's score is their mean over
    its pixels. A class on ``stuff`` gets ``kind = "stuff"``, any other ``"tag"``. Classes covering less than
    ``min_area_fraction`` of the image are left out.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be two maps of one size")
    if not 0.0 <= min_area_fraction <= 1.0:
        raise ValueError(f"min_area_fraction must be in [0, 1], got {min_area_fraction!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(vocabulary)):
        raise ValueError(f"label map values must index the {len(vocabulary)}-class vocabulary")
    height, width = labels.shape
    flat = labels.reshape(-1).astype(np.int64)
    areas = np.bincount(flat, minlength=len(vocabulary))
    sums = np.bincount(flat, weights=scores.reshape(-1), minlength=len(vocabulary))
    stuff = set(stuff)
    present = [c for c in np.flatnonzero(areas) if areas[c] >= min_area_fraction * height * width]
    if not present:
        return []
    masks = rle_io.encode(np.stack([labels == c for c in present]))
    boxes = rle_io.to_bbox_xyxy(masks)
    return [
        StuffRegion(
            label=vocabulary[c],
            segmentation=mask,
            bbox=tuple(float(v) for v in box),
            area=int(areas[c]),
            score=float(sums[c] / areas[c]),
            kind="stuff" if vocabulary[c] in stuff else "tag",
        )
        for c, mask, box in zip(present, masks, boxes, strict=True)
    ]


def ovss_row(regions: Sequence[StuffRegion]) -> dict[str, list[Any]]:
    """The ``ovss`` table columns of one image (without ``image_id``): aligned lists ``labels``, ``kinds``,
    ``scores``, ``areas``, ``boxes`` and ``masks``."""
    return {
        "labels": [r.label for r in regions],
        "kinds": [r.kind for r in regions],
        "scores": [float(r.score) for r in regions],
        "areas": [int(r.area) for r in regions],
        "boxes": [list(r.bbox) for r in regions],
        "masks": [dict(r.segmentation) for r in regions],
    }


def regions_from_row(row: Mapping[str, Any], height: int, width: int, where: str = "ovss") -> list[StuffRegion]:
    """The regions stored in one ``ovss`` row; raises ``ValueError`` naming ``where`` for a malformed row (lists
    of different lengths, a blank label, an unknown kind, a non-finite score, a mask not of ``height × width``)."""
    columns = ("labels", "kinds", "scores", "areas", "boxes", "masks")
    values = {c: list(row.get(c) or []) for c in columns}
    lengths = {c: len(v) for c, v in values.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: the region lists differ in length ({lengths})")
    out = []
    for i in range(lengths["labels"]):
        label, kind, score = values["labels"][i], values["kinds"][i], values["scores"][i]
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{where}: region {i} has no label")
        if kind not in REGION_KINDS:
            raise ValueError(f"{where}: region {i} ({label!r}) has kind {kind!r}, expected one of {REGION_KINDS}")
        if score is None or not math.isfinite(float(score)):
            raise ValueError(f"{where}: region {i} ({label!r}) has score {score!r}")
        mask = values["masks"][i]
        try:
            area = rle_io.validate_rle(mask, height, width)
        except rle_io.RLEError as err:
            raise ValueError(f"{where}: region {i} ({label!r}) has a bad mask: {err}") from None
        box = rle_io.to_bbox_xyxy(mask)[0]
        out.append(
            StuffRegion(label, rle_io.normalize(mask), tuple(float(v) for v in box), int(area), float(score), kind)
        )
    return out


def add_stuff_objects(
    objects: Sequence[Mapping[str, Any]],
    floating_objects: Sequence[Mapping[str, Any]],
    regions: Sequence[StuffRegion],
    width: int,
    height: int,
    *,
    duplicate_iou: float = 0.5,
    min_score: float = 0.0,
    kinds: Collection[str] = ("stuff",),
    into: str = "objects",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(objects, floating_objects)`` with the non-duplicate regions added as objects (see the module docstring).

    Only regions whose ``kind`` is in ``kinds`` and whose score is ``>= min_score`` are candidates (by default the
    stuff classes: things are instances, which SAM and the detectors cover). A candidate whose mask IoU with any
    existing object or floating object is ``>= duplicate_iou`` is dropped. New objects are appended, in region
    order, to ``objects`` (``into="objects"``) or ``floating_objects``. Every entry is copied and the ids are
    renumbered: objects ``0 … n-1`` then floating objects ``n … m-1`` (the level-1 id rule); compute affordances
    after this call. The inputs are not modified.
    """
    if into not in ("objects", "floating_objects"):
        raise ValueError(f"into must be 'objects' or 'floating_objects', got {into!r}")
    if not 0.0 < duplicate_iou <= 1.0:
        raise ValueError(f"duplicate_iou must be in (0, 1], got {duplicate_iou!r}")
    objs = [dict(o) for o in objects]
    floating = [dict(o) for o in floating_objects]
    candidates = [r for r in regions if r.kind in kinds and r.score >= min_score]
    if candidates:
        existing = objs + floating
        ious = _region_object_ious([r.segmentation for r in candidates], existing, width, height)
        new = [
            _stuff_object(r)
            for r, row in zip(candidates, ious, strict=True)
            if not (row.size and row.max() >= duplicate_iou)
        ]
        (objs if into == "objects" else floating).extend(new)
    for i, obj in enumerate(objs + floating):
        obj["id"] = i
    return objs, floating


def _stuff_object(region: StuffRegion) -> dict[str, Any]:
    obj: dict[str, Any] = dict.fromkeys(STUFF_OBJECT_FIELDS)
    obj.update(
        bbox=[float(v) for v in region.bbox],
        labels=[region.label],
        qualifiers=[""],
        score=float(region.score),
        sources=[OVSS_SOURCE],
        attributes=[],
        segmentation=dict(region.segmentation),
        segmentation_source=OVSS_SOURCE,
    )
    return obj


def _region_object_ious(
    region_masks: list[dict[str, Any]], existing: list[dict[str, Any]], width: int, height: int
) -> np.ndarray:
    """``(regions, objects)`` mask IoU; an object without a segmentation counts as its filled box."""
    out = np.zeros((len(region_masks), len(existing)), dtype=np.float64)
    with_mask = [i for i, o in enumerate(existing) if o.get("segmentation") is not None]
    boxed = [i for i, o in enumerate(existing) if o.get("segmentation") is None]
    if with_mask:
        out[:, with_mask] = rle_io.iou_matrix(region_masks, [existing[i]["segmentation"] for i in with_mask])
    if boxed:
        ranges = np.array([_box_pixel_range(existing[i].get("bbox"), width, height) for i in boxed], dtype=np.int64)
        for r, mask in enumerate(region_masks):
            out[r, boxed] = _mask_box_ious(rle_io.decode(mask), ranges)
    return out


def _box_pixel_range(box: Any, width: int, height: int) -> tuple[int, int, int, int]:
    """``(col0, row0, col1, row1)`` (ends exclusive) of the pixels whose centres lie in the xyxy ``box``, clipped to
    the image; a missing or non-finite box covers no pixel."""
    if box is None or len(box) != 4 or not all(v is not None and math.isfinite(float(v)) for v in box):
        return (0, 0, 0, 0)
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    c0 = min(max(math.ceil(x1 - 0.5), 0), width)
    r0 = min(max(math.ceil(y1 - 0.5), 0), height)
    c1 = min(max(math.ceil(x2 - 0.5), c0), width)
    r1 = min(max(math.ceil(y2 - 0.5), r0), height)
    return (c0, r0, c1, r1)


def _mask_box_ious(mask: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """IoU of one ``(H, W)`` mask with each filled box ``(col0, row0, col1, row1)``, by an integral image."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = np.asarray(mask, dtype=np.int64).cumsum(0).cumsum(1)
    c0, r0, c1, r1 = ranges.T
    inter = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    union = int(integral[-1, -1]) + (r1 - r0) * (c1 - c0) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
