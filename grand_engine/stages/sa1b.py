"""The ``sa1b`` stage: each image's SA-1B annotation JSON as a typed, checked table row.

SA-1B stores one JSON per image: an ``image`` block (``image_id``, ``width``, ``height``,
``file_name``) and ``annotations``, each with a COCO compressed-RLE ``segmentation``, an XYWH
``bbox``, ``area``, ``predicted_iou``, ``stability_score``, ``point_coords``, an XYWH ``crop_box``
and an ``id``. Boxes are converted to the project's absolute ``[x1, y1, x2, y2]`` here, once
(GranD converts them at every use, spec §0.3), and every mask is checked before anything
downstream (``sam_classify``, ``masks``) relies on it.

An image whose JSON is malformed, whose ``image`` block disagrees with the decoded image size, or
which has any bad annotation (malformed RLE, RLE size different from the image's, zero area,
missing or non-numeric fields) gets an error row naming the annotation and the reason — never a
partial row. A JSON larger than ``max_annotation_bytes`` is refused before it is read. An image without a JSON (folder input) gets a row with zero annotations.

**Orientation.** Annotations describe the image as displayed, i.e. after its EXIF orientation is
applied, like every box and mask of the project (``docs/schema.md``): the JSON's ``width``/``height``
must equal the ``images`` table's (post-rotation) size, and boxes and masks are in displayed pixel
coordinates. A JSON written for the stored pixels of an EXIF-rotated image (width and height swapped)
is refused with :class:`AnnotationSizeMismatch`, and the message names the orientation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from grand_engine.io import rle as rle_lib
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import BOX, RLE, table_schema

__all__ = [
    "ANNOTATION",
    "AnnotationSizeMismatch",
    "AnnotationTooLarge",
    "InvalidAnnotation",
    "MalformedAnnotationJSON",
    "SA1BAnnotationError",
    "SA1BStage",
    "parse_annotations",
]

ANNOTATION = pa.struct(
    [
        ("id", pa.int64()),
        ("bbox", BOX),  # xyxy, converted from SA-1B's XYWH
        ("area", pa.float32()),
        ("predicted_iou", pa.float32()),
        ("stability_score", pa.float32()),
        ("point_coords", pa.list_(pa.list_(pa.float32(), 2))),
        ("crop_box", BOX),  # xyxy, converted from SA-1B's XYWH
        ("segmentation", RLE),
    ]
)
"""One SA-1B mask annotation."""


class SA1BAnnotationError(ValueError):
    """Base class of the per-image errors of this stage."""


class MalformedAnnotationJSON(SA1BAnnotationError):
    """The JSON does not parse or lacks the SA-1B structure."""


class AnnotationSizeMismatch(SA1BAnnotationError):
    """The JSON's ``image`` block or a mask disagrees with the decoded image size."""


class InvalidAnnotation(SA1BAnnotationError):
    """One annotation has a bad field or a bad mask."""


class AnnotationTooLarge(SA1BAnnotationError):
    """The JSON is larger than ``max_annotation_bytes``; it is refused unread."""


MAX_ANNOTATION_BYTES_DEFAULT = 64 << 20
"""Largest SA-1B JSON read (64 MiB). An image with 5,000 masks has about 3 MB of JSON; parsing costs
several times the file size in memory, so a far larger member is refused before it is read."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _xywh_box(value: Any, what: str) -> list[float]:
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError(f"{what} must be [x, y, w, h], got {value!r}")
    x, y, w, h = (_number(v, what) for v in value)
    if w < 0 or h < 0:
        raise ValueError(f"{what} has a negative width or height: {value!r}")
    return [x, y, x + w, y + h]


def _points(value: Any) -> list[list[float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"point_coords must be a list of [x, y], got {value!r}")
    out = []
    for p in value:
        if not isinstance(p, list) or len(p) != 2:
            raise ValueError(f"point_coords entries must be [x, y], got {p!r}")
        out.append([_number(p[0], "point_coords"), _number(p[1], "point_coords")])
    return out


def _optional_score(ann: dict[str, Any], key: str) -> float | None:
    return None if ann.get(key) is None else _number(ann[key], key)


def _table_rle(seg: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """An already validated RLE in table form (compressed string counts)."""
    counts = seg["counts"]
    if isinstance(counts, str):
        return {"size": [int(height), int(width)], "counts": counts}
    if isinstance(counts, bytes):
        return {"size": [int(height), int(width)], "counts": counts.decode("ascii")}
    return rle_lib.normalize(seg)


def parse_annotations(
    raw: bytes | str, width: int, height: int, *, source: str = "annotation", orientation: int = 1
) -> dict[str, Any]:
    """Parse and check one SA-1B JSON against the displayed image size ``width×height``.

    ``orientation`` (the image's EXIF tag) only makes the size-mismatch message more helpful.

    Returns the row fields (``annotations``, ``num_annotations``, ``image_width``, ``image_height``).
    Raises a :class:`SA1BAnnotationError` subclass naming ``source``, the annotation and the reason.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedAnnotationJSON(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise MalformedAnnotationJSON(f"{source}: JSON nested too deeply to parse") from None
    if not isinstance(doc, dict):
        raise MalformedAnnotationJSON(f"{source}: top level must be an object, got {type(doc).__name__}")
    block, anns = doc.get("image"), doc.get("annotations")
    if not isinstance(block, dict):
        raise MalformedAnnotationJSON(f"{source}: missing the 'image' block")
    if not isinstance(anns, list):
        raise MalformedAnnotationJSON(f"{source}: 'annotations' must be a list")
    try:
        json_w, json_h = _integer(block.get("width"), "image.width"), _integer(block.get("height"), "image.height")
    except ValueError as exc:
        raise MalformedAnnotationJSON(f"{source}: {exc}") from None
    if (json_w, json_h) != (int(width), int(height)):
        hint = ""
        if orientation in (5, 6, 7, 8) and (json_w, json_h) == (int(height), int(width)):
            hint = (
                f"; the image has EXIF orientation {orientation} (displayed rotated): annotations must describe "
                "the displayed image, not the stored pixels"
            )
        raise AnnotationSizeMismatch(
            f"{source}: the JSON image block says {json_w}×{json_h} (W×H) but the image is "
            f"{int(width)}×{int(height)}{hint}"
        )
    out: list[dict[str, Any]] = []
    labels: list[str] = []
    for i, ann in enumerate(anns):
        label = f"annotation index {i}"
        try:
            if not isinstance(ann, dict):
                raise ValueError(f"must be an object, got {type(ann).__name__}")
            if "id" not in ann:
                raise ValueError("has no 'id'")
            ann_id = _integer(ann["id"], "id")
            label = f"annotation id={ann_id} (index {i})"
            if ann.get("segmentation") is None:
                raise ValueError("has no 'segmentation'")
            out.append(
                {
                    "id": ann_id,
                    "bbox": _xywh_box(ann.get("bbox"), "bbox"),
                    "area": None if ann.get("area") is None else _number(ann["area"], "area"),
                    "predicted_iou": _optional_score(ann, "predicted_iou"),
                    "stability_score": _optional_score(ann, "stability_score"),
                    "point_coords": _points(ann.get("point_coords")),
                    "crop_box": None if ann.get("crop_box") is None else _xywh_box(ann["crop_box"], "crop_box"),
                    "segmentation": ann["segmentation"],
                }
            )
            labels.append(label)
        except (ValueError, TypeError) as exc:
            raise InvalidAnnotation(f"{source}: {label}: {exc}") from None
    segs = [a["segmentation"] for a in out]
    try:
        areas = rle_lib.validate_many(segs, height, width)
        for a, mask_area in zip(out, areas.tolist(), strict=True):
            a["segmentation"] = _table_rle(a["segmentation"], height, width)
            if a["area"] is None:
                a["area"] = float(mask_area)
    except rle_lib.RLEError as exc:
        index = getattr(exc, "index", None)
        label = labels[index] if index is not None else "an annotation"
        cls = AnnotationSizeMismatch if "does not match the image size" in str(exc) else InvalidAnnotation
        raise cls(f"{source}: {label}: segmentation: {exc}") from None
    return {"annotations": out, "num_annotations": len(out), "image_width": json_w, "image_height": json_h}


@dataclass
class SA1BStage(Stage):
    """Read each image's SA-1B JSON into typed, checked annotations (boxes converted to xyxy)."""

    name = "sa1b"
    requires = ("images",)
    level = 1
    version = "1"
    needs_annotations = True
    default_resources = Resources(cpus=1.0, batch_size=64)

    max_annotation_bytes: int = MAX_ANNOTATION_BYTES_DEFAULT  # larger JSONs are refused unread (memory guard)
    schema = table_schema(
        ("annotations", pa.list_(ANNOTATION)),
        ("num_annotations", pa.int32()),
        ("image_width", pa.int32()),  # from the JSON image block (equal to the image's size, else an error)
        ("image_height", pa.int32()),
        version="1",
    )

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        image = unit.image_row(image_id)
        width, height = int(image["width"]), int(image["height"])
        size = image.get("ann_size")
        if size is not None and size > self.max_annotation_bytes:
            raise AnnotationTooLarge(
                f"{image_id}.json: {size} bytes, more than max_annotation_bytes = {self.max_annotation_bytes} "
                "(refused unread; raise max_annotation_bytes to accept it)"
            )
        raw = unit.annotation_json(image_id)
        if raw is None:
            # Folder input without a JSON: nothing to check, the image simply has no SA-1B masks.
            return {
                "image_id": image_id,
                "annotations": [],
                "num_annotations": 0,
                "image_width": width,
                "image_height": height,
            }
        source = f"{image_id}.json (image {image.get('file_name') or image_id})"
        orientation = int(image.get("orientation") or 1)
        return {"image_id": image_id, **parse_annotations(raw, width, height, source=source, orientation=orientation)}
