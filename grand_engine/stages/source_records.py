"""``source_records``: the root stage of the GranD-f source inputs (OpenPSG, RefCOCOg, Flickr30K Entities).

A unit's members are the lines of a record shard (:mod:`grand_engine.sources.shards`): each points at one
:class:`~grand_engine.sources.records.SourceRecord` (its annotation locator) and at the image file the record names
(its image locator). For every member this stage

1. probes and (with ``verify_decode``) decodes the image exactly as the ``images`` stage does — it *is* the
   ``images`` stage with more columns, so every other stage finds the image where it always does;
2. parses the record and checks that it belongs to the member (same id) and that the size it states is the
   image's (``ImageSizeMismatch`` otherwise: its masks and boxes would not fit);
3. applies the read-time checks again with the decoded size
   (:func:`~grand_engine.sources.records.check_record`), which drops entities whose region does not fit the image.

One row per usable record: the ``images`` columns, then the record's ``dataset`` (its ``source``), ``split``, ``kind``,
``source_key``, base ``captions``, ``entities``, ``relations`` and ``dropped``. Every unusable member is an error
row naming the record and the reason: the shard index's (``MissingImage``, ``MalformedRecord``,
``DuplicateMember``, the reader's ``NoRelation`` / ``NoGroundablePhrase`` / …), the image's (``ImageError``,
``ImageTooSmall``) or this stage's (``MalformedRecord``, ``ImageSizeMismatch``, ``NoRelation``,
``NoGroundablePhrase``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.io.sa1b import Member, read_locator
from grand_engine.runtime.stage import ErrorRecord, StageResult, UnitInput
from grand_engine.schema import BOX, IMAGES_SCHEMA, RLE, table_schema
from grand_engine.sources.records import RecordError, SourceRecord, check_record
from grand_engine.stages.images import ImagesStage

ENTITY = pa.struct(
    [
        ("key", pa.string()),  # entity name (relation records) or referring phrase (phrase records)
        ("label", pa.string()),  # category or phrase type
        ("object_id", pa.int64()),  # panoptic segment id, COCO annotation id or Flickr30K entity id
        ("bbox", BOX),  # [x1, y1, x2, y2], clipped to the image; null when the source gives none
        ("segmentation", RLE),  # the region's mask (OpenPSG segments, COCO crowd RLE); null otherwise
        ("polygons", pa.list_(pa.list_(pa.float64()))),  # COCO polygons (RefCOCOg); null otherwise
    ]
)
RELATION = pa.struct([("subject", pa.string()), ("predicate", pa.string()), ("object", pa.string())])
DROPPED = pa.struct([("phrase", pa.string()), ("reason", pa.string())])

SOURCE_RECORDS_SCHEMA = table_schema(
    *[IMAGES_SCHEMA.field(name) for name in IMAGES_SCHEMA.names[1:]],
    ("dataset", pa.string()),  # openpsg | refcocog | flickr30k (the images column "source" is the file read)
    ("split", pa.string()),  # train | val | test
    ("kind", pa.string()),  # relation | phrase
    ("source_key", pa.string()),  # the record's id in its dataset
    ("captions", pa.list_(pa.string())),  # base captions
    ("entities", pa.list_(ENTITY)),
    ("relations", pa.list_(RELATION)),
    ("dropped", pa.list_(DROPPED)),  # entities and relations left out when the record was read, with the reason
)
"""The ``source_records`` table."""


class RecordRejected(Exception):
    """A member whose record cannot be used; ``error_type`` names why."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def record_columns(record: SourceRecord) -> dict[str, Any]:
    """The record part of a ``source_records`` row."""
    return {
        "dataset": record.source,
        "split": record.split,
        "kind": record.kind,
        "source_key": record.source_key,
        "captions": list(record.captions),
        "entities": [e.to_json() for e in record.entities],
        "relations": [r.to_json() for r in record.relations],
        "dropped": list(record.dropped),
    }


@dataclass
class SourceRecords(ImagesStage):
    """Probe each record's image and attach the record (module docstring)."""

    name: ClassVar[str] = "source_records"
    requires: ClassVar[tuple[str, ...]] = ()
    schema: ClassVar[pa.Schema] = SOURCE_RECORDS_SCHEMA

    def process_unit(self, unit: UnitInput) -> StageResult:
        rows: list[dict[str, Any]] = []
        errors: list[ErrorRecord] = []
        for member in unit.members:
            try:
                rows.append(self._record_row(member))
            except RecordRejected as exc:
                errors.append(ErrorRecord(member.image_id, exc.error_type, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad member never stops the unit
                errors.append(ErrorRecord(member.image_id, getattr(exc, "error_type", type(exc).__name__), str(exc)))
        return StageResult(self.to_table(rows), errors)

    def _record_row(self, member: Member) -> dict[str, Any]:
        row = self._row(member)  # the images columns; raises for a member with an error and for a bad image
        if member.annotation is None:
            raise RecordRejected("MalformedRecord", f"{member.image_id}: the member has no record")
        try:
            record = SourceRecord.from_json(json.loads(read_locator(member.annotation).decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as exc:
            raise RecordRejected("MalformedRecord", f"{member.image_id}: {exc}") from None
        if record.record_id != member.image_id:
            raise RecordRejected(
                "MalformedRecord",
                f"{member.image_id}: the shard line now holds record {record.record_id!r} (the shard changed since "
                "it was indexed; run again to re-index it)",
            )
        width, height = row["width"], row["height"]
        if record.width is not None and record.height is not None and (record.width, record.height) != (width, height):
            raise RecordRejected(
                "ImageSizeMismatch",
                f"{record.record_id}: {record.source} says the image {record.file_name} is "
                f"{record.width}x{record.height}, the file is {width}x{height}",
            )
        record = check_record(record, width, height)
        if record.error_type:
            raise RecordRejected(record.error_type, record.error or record.error_type)
        row.update(record_columns(record))
        return row
