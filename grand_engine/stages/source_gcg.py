"""``source_gcg``: the GranD-f record of each source record — its caption with every span grounded to a mask.

For each span of the ``source_caption`` row, the entity it names (same ``key``) in the ``source_records`` row gives
the region:

* a ``segmentation`` (OpenPSG's panoptic segment, a COCO crowd mask) is the mask (``mask_source = "segmentation"``);
* ``polygons`` (RefCOCOg) are kept as written — GLaMM's RefCOCOg loader reads polygons — and rasterised into the
  mask (``"polygons"``);
* a box only (Flickr30K) takes the SAM mask of the table named by ``box_masks`` (``source_masks``; ``"sam"``).

A mask must decode to the image's size with at least one pixel. A span whose entity has no usable mask is left out
with its reason (``no_mask``, ``empty_mask``, ``mask_size_mismatch``) in ``dropped`` — its words stay in the caption
as plain text — and a record left without any grounding is an error row (``NoGroundedPhrase``). The row also
carries what the exports need: ``file_name``, the image size, ``dataset``, ``split`` and ``source_key``; ``dropped``
adds these span-level drops to the ones made when the record was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.io import rle
from grand_engine.runtime.stage import ErrorRecord, Resources, Stage, UnitInput
from grand_engine.schema import BOX, RLE, table_schema
from grand_engine.stages.source_records import DROPPED

SOURCE_GROUNDING = pa.struct(
    [
        ("phrase", pa.string()),  # == caption[start:end]
        ("key", pa.string()),  # the entity name or referring phrase it grounds
        ("token_positives", pa.list_(pa.int32(), 2)),  # [start, end) code-point offsets (GranD-f's spelling)
        ("rle_masks", pa.list_(RLE)),  # the phrase's mask (one entry)
        ("polygons", pa.list_(pa.list_(pa.float64()))),  # RefCOCOg: the COCO polygons the mask was drawn from
        ("bbox", BOX),  # the region's box (the source's, or the mask's tight box)
        ("object_id", pa.int64()),  # the source's id of the region
        ("mask_source", pa.string()),  # segmentation | polygons | sam
    ]
)

SOURCE_GCG_SCHEMA = table_schema(
    ("file_name", pa.string()),  # the name GLaMM's loader joins with its image folder
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("dataset", pa.string()),  # openpsg | refcocog | flickr30k
    ("split", pa.string()),  # train | val | test
    ("source_key", pa.string()),  # the record's id in its dataset
    ("caption", pa.string()),
    ("groundings", pa.list_(SOURCE_GROUNDING)),  # ordered by start offset
    ("dropped", pa.list_(DROPPED)),  # read-time drops, then spans without a usable mask
)
"""The ``source_gcg`` table."""


class NoGroundedPhrase(ValueError):
    """No span of the caption has a usable mask."""


@dataclass
class SourceGcg(Stage):
    """GranD-f records of the source records (module docstring)."""

    name: ClassVar[str] = "source_gcg"
    requires: ClassVar[tuple[str, ...]] = ("source_records", "source_caption")
    schema: ClassVar[pa.Schema] = SOURCE_GCG_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=256)

    box_masks: str | None = None  # the table of SAM masks for box-only entities (source_masks); null: none

    def __post_init__(self) -> None:
        if self.box_masks is not None and self.box_masks in self.requires:
            raise ValueError(f"box_masks must name a mask table, not {self.box_masks!r}")

    def inputs(self) -> tuple[str, ...]:
        return self.requires + ((self.box_masks,) if self.box_masks else ())

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any] | ErrorRecord:
        record = unit.image_row(image_id)
        caption = unit.input_row("source_caption", image_id)
        sam = {}
        if self.box_masks:
            sam = {m["key"]: m for m in unit.input_row(self.box_masks, image_id).get("masks") or []}
        height, width = int(record["height"]), int(record["width"])
        entities = {e["key"]: e for e in record.get("entities") or []}
        groundings: list[dict[str, Any]] = []
        dropped = list(record.get("dropped") or [])
        text = caption["caption"]
        for span in caption.get("spans") or []:
            start, end = int(span["start"]), int(span["end"])
            if text[start:end] != span["phrase"]:
                raise ValueError(
                    f"span [{start}, {end}) of {span['key']!r} selects {text[start:end]!r}, not {span['phrase']!r}"
                )
            entity = entities.get(span["key"])
            if entity is None:
                raise ValueError(f"the caption grounds {span['key']!r}, which the record does not have")
            grounding, reason = _grounding(span, entity, sam.get(span["key"]), height, width)
            if grounding is None:
                dropped.append({"phrase": span["phrase"], "reason": reason})
            else:
                groundings.append(grounding)
        if not groundings:
            reasons = ", ".join(f"{d['phrase']!r}: {d['reason']}" for d in dropped[-5:])
            raise NoGroundedPhrase(f"{image_id}: no phrase of the caption has a usable mask ({reasons})")
        groundings.sort(key=lambda g: (g["token_positives"][0], g["token_positives"][1]))
        return {
            "image_id": image_id,
            "file_name": record["file_name"],
            "width": width,
            "height": height,
            "dataset": record["dataset"],
            "split": record["split"],
            "source_key": record.get("source_key"),
            "caption": text,
            "groundings": groundings,
            "dropped": dropped,
        }


def _grounding(
    span: dict[str, Any], entity: dict[str, Any], sam: dict[str, Any] | None, height: int, width: int
) -> tuple[dict[str, Any] | None, str]:
    """The grounding of one span, or ``None`` and why it is left out."""
    polygons = entity.get("polygons")
    if entity.get("segmentation") is not None:
        mask, source = entity["segmentation"], "segmentation"
    elif polygons:
        try:
            mask, source = rle.from_polygons(polygons, height, width), "polygons"
        except rle.RLEError:
            return None, "no_mask"
    elif sam is not None and sam.get("segmentation") is not None:
        mask, source = sam["segmentation"], "sam"
    else:
        return None, "no_mask"
    try:
        rle.validate_rle(mask, height, width)
    except rle.RLEError as exc:
        return None, "empty_mask" if "zero area" in str(exc) else "mask_size_mismatch"
    box = entity.get("bbox")
    if box is None:
        box = [float(v) for v in rle.to_bbox_xyxy(mask)[0]]
    return {
        "phrase": span["phrase"],
        "key": span["key"],
        "token_positives": [int(span["start"]), int(span["end"])],
        "rle_masks": [{"size": [int(v) for v in mask["size"]], "counts": mask["counts"]}],
        "polygons": [list(map(float, p)) for p in polygons] if source == "polygons" else None,
        "bbox": [float(v) for v in box],
        "object_id": entity.get("object_id"),
        "mask_source": source,
    }, ""
