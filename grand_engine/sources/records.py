"""The per-image record every source reader writes, and the checks a record passes before it is captioned.

A :class:`SourceRecord` is plain JSON (:meth:`SourceRecord.to_json` / :meth:`SourceRecord.from_json`), one line of a
record shard. Its ``entities`` are what a caption must mention and what the groundings point at:

* **relation** records (OpenPSG): ``key`` is the entity name the LLM must keep unchanged, ``<label>-<n>``
  (``person-1``, ``dining table-2``), numbered per label from 1 in segment order; ``relations`` are the
  [subject, predicate, object] triples between those names; ``segmentation`` is the panoptic segment's mask;
* **phrase** records (RefCOCOg, Flickr30K Entities): ``key`` is the referring phrase the caption must contain;
  the region is a COCO instance's ``polygons`` (RefCOCOg, kept as COCO wrote them, since GLaMM's RefCOCOg loader
  reads polygons), or a ``bbox`` (Flickr30K, the union of the entity's boxes) that SAM turns into a mask.

:func:`check_record` applies the read-time rules. Each entity or relation that breaks one is moved to ``dropped``
with its reason; a record left with nothing to caption gets ``error_type``/``error`` (it becomes an error row):

``empty_phrase``        the phrase (or entity name) is empty after collapsing whitespace
``duplicate_phrase``    the same phrase (ignoring case) as an earlier entity of the record
``inside_other_phrase`` the phrase occurs word-bounded inside another phrase of the record (its first occurrence
                        in any caption could be the other phrase's, so its span would be ambiguous)
``no_region``           no mask, polygon or box
``box_outside_image``   a box corner beyond the image by more than :data:`BOX_TOLERANCE` pixels, or a box with
                        no area (a box within the tolerance is clipped to the image)
``mask_size_mismatch``  a mask whose size is not the image's
``empty_mask``          a mask with no pixel
``bad_polygon``         no polygon with at least three points (malformed polygons are removed first)
``unknown_entity``      (relations) a triple naming an entity the record does not have, or one that was dropped
``duplicate_relation``  (relations) the same triple twice
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from grand_engine.io import rle
from grand_engine.sources import KINDS, SOURCES
from grand_engine.sources.spans import collapse, contains_word

BOX_TOLERANCE = 1.0
"""Pixels a box may pass the image border by before it counts as outside (Flickr30K Entities' boxes use 1-based
inclusive pixel coordinates, so ``xmax`` may equal the width); a box within it is clipped to the image."""

SPLITS = ("train", "val", "test")


class RecordError(ValueError):
    """A record line that is not a valid :class:`SourceRecord` (the message names the field)."""


@dataclass
class Entity:
    """Something a caption must mention: an entity name (relation records) or a referring phrase."""

    key: str
    label: str = ""  # the category (OpenPSG, RefCOCOg) or the phrase type (Flickr30K: people, clothing…)
    object_id: int | None = None  # panoptic segment id, COCO annotation id or Flickr30K entity id
    bbox: list[float] | None = None  # [x1, y1, x2, y2] in pixels
    segmentation: dict[str, Any] | None = None  # COCO compressed RLE of the image's size
    polygons: list[list[float]] | None = None  # COCO polygons [[x1, y1, x2, y2, …], …]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "object_id": self.object_id,
            "bbox": self.bbox,
            "segmentation": self.segmentation,
            "polygons": self.polygons,
        }


@dataclass
class Relation:
    """A [subject, predicate, object] triple between two entity names."""

    subject: str
    predicate: str
    object: str

    def to_json(self) -> dict[str, str]:
        return {"subject": self.subject, "predicate": self.predicate, "object": self.object}

    def text(self) -> str:
        return f"{self.subject} {self.predicate} {self.object}"


@dataclass
class SourceRecord:
    """One image (Flickr30K: one image and sentence) of an open dataset, ready to be captioned."""

    record_id: str  # unique across sources: psg_<id>, refcocog_<coco id>_<split>, flickr_<stem>_<sentence>
    source: str  # openpsg | refcocog | flickr30k
    kind: str  # relation | phrase
    split: str  # train | val | test
    file_name: str  # the name GLaMM's loader joins with its image folder
    image_path: str | None  # where the image is on this machine (None: not found when the record was read)
    width: int | None = None  # the size the dataset states (checked against the image when it is read)
    height: int | None = None
    source_key: str = ""  # the record's id in its dataset (PSG image id, COCO image id, Flickr30K stem#sentence)
    captions: list[str] = field(default_factory=list)  # base captions (OpenPSG: COCO captions; Flickr30K: sentence)
    entities: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)  # {"phrase", "reason"}
    error_type: str | None = None
    error: str | None = None

    def drop(self, phrase: str, reason: str) -> None:
        self.dropped.append({"phrase": phrase, "reason": reason})

    def fail(self, error_type: str, message: str) -> SourceRecord:
        self.error_type, self.error = error_type, f"{self.record_id}: {message}"
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "source": self.source,
            "kind": self.kind,
            "split": self.split,
            "file_name": self.file_name,
            "image_path": self.image_path,
            "width": self.width,
            "height": self.height,
            "source_key": self.source_key,
            "captions": list(self.captions),
            "entities": [e.to_json() for e in self.entities],
            "relations": [r.to_json() for r in self.relations],
            "dropped": list(self.dropped),
            "error_type": self.error_type,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Any) -> SourceRecord:
        """Parse one record; :class:`RecordError` names the first field that is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise RecordError(f"a record must be a JSON object, got {type(data).__name__}")
        where = str(data.get("record_id") or "<record without record_id>")
        try:
            record = cls(
                record_id=_text(data, "record_id"),
                source=_choice(data, "source", SOURCES),
                kind=_choice(data, "kind", KINDS),
                split=_choice(data, "split", SPLITS),
                file_name=_text(data, "file_name"),
                image_path=_optional_text(data, "image_path"),
                width=_optional_int(data, "width"),
                height=_optional_int(data, "height"),
                source_key=str(data.get("source_key") or ""),
                captions=[_as_text(c, "captions[]") for c in _list(data, "captions")],
                entities=[_entity(e, i) for i, e in enumerate(_list(data, "entities"))],
                relations=[_relation(r, i) for i, r in enumerate(_list(data, "relations"))],
                dropped=[
                    {"phrase": str(d.get("phrase", "")), "reason": str(d.get("reason", ""))}
                    for d in _list(data, "dropped")
                    if isinstance(d, dict)
                ],
                error_type=_optional_text(data, "error_type"),
                error=_optional_text(data, "error"),
            )
        except RecordError as exc:
            raise RecordError(f"record {where}: {exc}") from None
        return record


# -- parsing helpers --------------------------------------------------------------------------------------------


def _as_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _text(data: dict[str, Any], name: str) -> str:
    value = _as_text(data.get(name), name)
    if not value:
        raise RecordError(f"{name} is empty")
    return value


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else _as_text(value, name)


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RecordError(f"{name} must be a positive integer, got {value!r}")
    return value


def _choice(data: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = data.get(name)
    if value not in choices:
        raise RecordError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _list(data: dict[str, Any], name: str) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"{name} must be a list, got {type(value).__name__}")
    return value


def _numbers(value: Any, name: str) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise RecordError(f"{name} must be a list of numbers")
    return [float(v) for v in value]


def _entity(data: Any, index: int) -> Entity:
    name = f"entities[{index}]"
    if not isinstance(data, dict):
        raise RecordError(f"{name} must be an object")
    bbox = data.get("bbox")
    if bbox is not None:
        bbox = _numbers(bbox, f"{name}.bbox")
        if len(bbox) != 4:
            raise RecordError(f"{name}.bbox must have 4 numbers [x1, y1, x2, y2], got {len(bbox)}")
    seg = data.get("segmentation")
    if seg is not None and not (isinstance(seg, dict) and "size" in seg and "counts" in seg):
        raise RecordError(f"{name}.segmentation must be a COCO RLE with 'size' and 'counts'")
    polygons = data.get("polygons")
    if polygons is not None:
        if not isinstance(polygons, list):
            raise RecordError(f"{name}.polygons must be a list of polygons")
        polygons = [_numbers(p, f"{name}.polygons[{k}]") for k, p in enumerate(polygons)]
    object_id = data.get("object_id")
    if object_id is not None and (isinstance(object_id, bool) or not isinstance(object_id, int)):
        raise RecordError(f"{name}.object_id must be an integer")
    key = data.get("key")
    return Entity(
        key=_as_text(key, f"{name}.key"),
        label=str(data.get("label") or ""),
        object_id=object_id,
        bbox=bbox,
        segmentation=seg,
        polygons=polygons,
    )


def _relation(data: Any, index: int) -> Relation:
    name = f"relations[{index}]"
    if isinstance(data, dict):
        parts = [data.get("subject"), data.get("predicate"), data.get("object")]
    elif isinstance(data, list) and len(data) == 3:
        parts = list(data)
    else:
        raise RecordError(f"{name} must be {{subject, predicate, object}} or a 3-item list")
    subject, predicate, obj = (_as_text(p, name) for p in parts)
    return Relation(subject, predicate, obj)


# -- read-time checks -------------------------------------------------------------------------------------------


def _box_problem(box: list[float], width: int | None, height: int | None) -> tuple[list[float] | None, str]:
    """The box clipped to the image, or ``None`` and the reason it is unusable."""
    if not all(math.isfinite(v) for v in box):
        return None, "box_outside_image"
    x1, y1, x2, y2 = box
    if width is not None and height is not None:
        tol = BOX_TOLERANCE
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            return None, "box_outside_image"
        x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
        y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None, "box_outside_image"
    return [x1, y1, x2, y2], ""


def _usable_polygons(polygons: list[list[float]] | None) -> list[list[float]]:
    return [p for p in polygons or [] if len(p) >= 6 and len(p) % 2 == 0 and all(math.isfinite(v) for v in p)]


def _region(entity: Entity, width: int | None, height: int | None) -> tuple[Entity | None, str]:
    """The entity with its region checked (box clipped, malformed polygons removed), or ``None`` and why not."""
    if entity.segmentation is None and entity.polygons is None and entity.bbox is None:
        return None, "no_region"
    out = replace(entity)
    if entity.segmentation is not None and width is not None and height is not None:
        try:
            rle.validate_rle(entity.segmentation, height, width)
        except rle.RLEError as exc:
            return None, "empty_mask" if "zero area" in str(exc) else "mask_size_mismatch"
    if entity.polygons is not None:
        out.polygons = _usable_polygons(entity.polygons)
        if not out.polygons:
            return None, "bad_polygon"
    if entity.bbox is not None:
        out.bbox, reason = _box_problem(entity.bbox, width, height)
        if out.bbox is None:
            return None, reason
    return out, ""


def check_record(record: SourceRecord, width: int | None = None, height: int | None = None) -> SourceRecord:
    """A copy of ``record`` with the read-time rules applied (module docstring) against the image size ``width``
    × ``height`` (default: the size the record states). Applying it twice changes nothing more."""
    width = width if width is not None else record.width
    height = height if height is not None else record.height
    out = replace(record, entities=[], relations=[], dropped=list(record.dropped))
    if out.error_type:
        return out
    kept: list[Entity] = []
    seen: set[str] = set()
    for entity in record.entities:
        key = collapse(entity.key)
        if not key:
            out.drop(entity.key, "empty_phrase")
            continue
        if key.lower() in seen:
            out.drop(key, "duplicate_phrase")
            continue
        checked, reason = _region(replace(entity, key=key), width, height)
        if checked is None:
            out.drop(key, reason)
            continue
        seen.add(key.lower())
        kept.append(checked)
    if record.kind == "phrase":
        inside = {i for i, e in enumerate(kept) for j, o in enumerate(kept) if i != j and contains_word(o.key, e.key)}
        for i in sorted(inside):
            out.drop(kept[i].key, "inside_other_phrase")
        out.entities = [e for i, e in enumerate(kept) if i not in inside]
        if not out.entities:
            return out.fail("NoGroundablePhrase", _nothing_left("phrase", out.dropped))
        return out
    names = {e.key for e in kept}
    triples: set[tuple[str, str, str]] = set()
    for rel in record.relations:
        triple = (collapse(rel.subject), collapse(rel.predicate), collapse(rel.object))
        if triple[0] not in names or triple[2] not in names or not triple[1]:
            out.drop(" ".join(triple), "unknown_entity")
            continue
        if triple in triples:
            out.drop(" ".join(triple), "duplicate_relation")
            continue
        triples.add(triple)
        out.relations.append(Relation(*triple))
    used = {r.subject for r in out.relations} | {r.object for r in out.relations}
    out.entities = [e for e in kept if e.key in used]
    if not out.relations:
        return out.fail("NoRelation", _nothing_left("relation", out.dropped))
    return out


def _nothing_left(what: str, dropped: list[dict[str, str]]) -> str:
    if not dropped:
        return f"the record has no {what} to caption"
    reasons = "; ".join(f"{d['phrase']!r}: {d['reason']}" for d in dropped[:5])
    more = f" (and {len(dropped) - 5} more)" if len(dropped) > 5 else ""
    return f"no {what} is left to caption after the read-time checks: {reasons}{more}"
