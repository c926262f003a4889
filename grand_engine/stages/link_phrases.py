"""``link_phrases``: link grounded caption phrases to level-1 objects (GranD step 14b, §14 defects fixed).

Grounded phrases (those with a box) are handled one by one in caption order (BLIP-2 phrases, then VLM phrases;
within a caption, the order of the ``ground_phrases`` list). A phrase box has its corners ordered and is clipped
to the image; a null, non-finite or (after clipping) zero-area box counts as "not grounded" and is skipped.
For each grounded phrase:

* **objects** — the phrase is linked to the object whose box has the *highest* IoU with the phrase box, when
  that IoU is > ``iou_threshold`` (IoU in ``iou_convention``: ``continuous`` by default, ``pixel`` for the
  reference's +1 on every side, which the ``grand`` manifest sets; the reference took the *first* object over the threshold, which depends on
  list order; argmax is the sane reading of the rule, ties go to the first).
* **floating objects** — independently, the best floating object over the threshold is linked too. A level-1
  floating object linked this way is *confirmed* by the grounding and is promoted to ``objects`` (what the
  reference intends, §13a). Its labels gain the phrase's noun only when the noun is not already among them
  (the reference appended it unconditionally, and that duplicate append was what made ``len(labels) > 1`` and
  so promoted the box, §14.35); ``ground_phrases`` is added to its ``sources``.
* **neither** — a new floating object is created: ``labels = [noun]`` (normalised like every label),
  ``attributes = [phrase]``, ``score = null``, ``sources = ["ground_phrases"]`` (the shipped GranD data
  stores MDETR-only entries the same way: noun as label, phrase as attribute). Later phrases can link to it
  (a second phrase over the same region adds its noun instead of making a duplicate); an object made from the
  captions alone is never promoted — only agreement between a detector and the grounding is.

Then ids are renumbered: the level-1 objects in their order, then the promoted ones, get ``0..n-1``; the
remaining floating objects (level-1 ones, then caption-made ones) follow contiguously. Every id-bearing field
is remapped: the relationships and the affordances (the reference left affordance ids stale, §14.35; affordance
``object_ids`` stay sorted as ``level1`` writes them; their content stays level 1's, so nouns added here do not
create affordances, as in the reference). There is
no ``id_counter`` in the output and no separate ``object_ids`` / ``floating_object_ids`` lists (``id <
len(objects)`` tells them apart).

``relationships`` has one entry per normalised phrase (lower-case, whitespace collapsed), in the order phrases
were first seen, with the distinct new ids it was linked to in link order. ``captions`` is ``[blip2, vlm]`` as
the caption stages produced them.

Region attributes, label choice, depth and the big-box promotion of step 15 are applied on top of this table
by the ``level2`` stage (:mod:`grand_engine.stages.level2`); the side stages ``region_attributes``,
``label_assign`` and ``object_depth`` key their results by the ids assigned here.

The stage checks every output row with :func:`grand_engine.validate.validate_annotation` at level 2
(``check_invariants``); a row that breaks an invariant becomes that image's error row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import check_iou_convention, iou_matrix
from grand_engine.labels import normalise_label
from grand_engine.phrases import normalise_phrase
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import OBJECT, table_schema
from grand_engine.stages.level1 import LEVEL1_FIELDS

GROUNDING_SOURCE = "ground_phrases"
"""The ``sources`` entry recorded on objects the phrase grounding created or confirmed."""

RELATIONSHIP = pa.struct([("phrase", pa.string()), ("object_ids", pa.list_(pa.int32()))])
"""One grounded phrase and the ids of the objects / floating objects it was linked to."""

LEVEL2_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    *LEVEL1_FIELDS,
    ("relationships", pa.list_(RELATIONSHIP)),
    ("captions", pa.list_(pa.string())),
)

LEVEL2_SCHEMA = table_schema(*LEVEL2_FIELDS)
"""The ``link_phrases`` table and the final ``level2`` table (same columns): every ``level1`` column,
``relationships`` and ``captions`` ([BLIP-2, VLM])."""

_OBJECT_FIELDS = tuple(OBJECT.field(i).name for i in range(OBJECT.num_fields))


def link_phrases(
    level1_row: dict[str, Any],
    captions: list[str | None],
    phrases: list[dict[str, Any]],
    iou_threshold: float = 0.75,
    iou_convention: str = "continuous",
) -> dict[str, Any]:
    """The ``link_phrases`` row of one image from its ``level1`` row, its two captions and its grounded phrases.

    ``phrases`` are ``ground_phrases`` entries (``caption_index``, ``noun``, ``phrase``, ``box``, …); entries
    without a usable box (null, non-finite or zero-area) are skipped. The input row is not modified.
    Raises ``ValueError`` when the level-1 ids are not unique or an affordance names an unknown id.
    """
    row = dict(level1_row)  # objects are rebuilt below; nothing else of the input is modified
    objects: list[dict[str, Any]] = [_complete_object(o) for o in row.get("objects") or []]
    floating: list[dict[str, Any]] = [_complete_object(o) for o in row.get("floating_objects") or []]
    n_objects = len(objects)
    old_to_uid = _uids_by_old_id(objects + floating)
    confirmed, relations = _link_all(
        objects, floating, phrases, row.get("width"), row.get("height"), iou_threshold, iou_convention
    )

    # Renumber: objects, promoted floating objects, then the rest; ids are positions.
    all_records = objects + floating
    promoted = [n_objects + i for i in range(len(floating)) if i in confirmed]
    remaining = [n_objects + i for i in range(len(floating)) if i not in confirmed]
    new_order = list(range(n_objects)) + promoted + remaining
    uid_to_new = {uid: new for new, uid in enumerate(new_order)}
    n_new_objects = n_objects + len(promoted)
    for uid, new in uid_to_new.items():
        all_records[uid]["id"] = new

    row["objects"] = [all_records[uid] for uid in new_order[:n_new_objects]]
    row["floating_objects"] = [all_records[uid] for uid in new_order[n_new_objects:]]
    row["affordances"] = [_remap_affordance(a, old_to_uid, uid_to_new) for a in row.get("affordances") or []]
    row["relationships"] = [
        {"phrase": phrase, "object_ids": [uid_to_new[uid] for uid in uids]} for phrase, uids in relations.items()
    ]
    row["captions"] = list(captions)
    row.pop("id_counter", None)
    return row


def _uids_by_old_id(records: list[dict[str, Any]]) -> dict[int, int]:
    """Every record's position ("uid") in objects + floating, by its level-1 id; ``ValueError`` for a missing or
    repeated id."""
    old_to_uid: dict[int, int] = {}
    for uid, obj in enumerate(records):
        old = obj.get("id")
        if old is None:
            raise ValueError(f"level-1 object at position {uid} has no id")
        if old in old_to_uid:
            raise ValueError(f"level-1 id {old} is used by more than one object")
        old_to_uid[int(old)] = uid
    return old_to_uid


def _link_all(
    objects: list[dict[str, Any]],
    floating: list[dict[str, Any]],
    phrases: list[dict[str, Any]],
    width: Any,
    height: Any,
    iou_threshold: float,
    iou_convention: str,
) -> tuple[set[int], dict[str, list[int]]]:
    """Link the grounded phrases in caption order (``floating`` gains the caption-made objects and the nouns of
    the confirmed ones). Returns the floating positions confirmed by a grounding (level-1 ones only) and, per
    normalised phrase, the linked uids in link order."""
    n_objects = len(objects)
    n_level1_floating = len(floating)
    object_boxes = _boxes(objects)
    confirmed: set[int] = set()  # floating positions (< n_level1_floating) confirmed by a grounding
    relations: dict[str, list[int]] = {}  # normalised phrase -> uids in link order
    for entry in sorted(phrases or [], key=_caption_order):
        box = _valid_box(entry.get("box"), width, height)
        text = normalise_phrase(entry.get("phrase") or "")
        if box is None or not text:
            continue
        noun = normalise_label(entry.get("noun") or "")
        linked: list[int] = []

        best = _best_match(box, object_boxes, iou_threshold, iou_convention)
        if best is not None:
            linked.append(best)

        fbest = _best_match(box, _boxes(floating), iou_threshold, iou_convention)
        if fbest is not None:
            obj = floating[fbest]
            _add_label(obj, noun.name, noun.qualifier)
            _add_source(obj, GROUNDING_SOURCE)
            if fbest < n_level1_floating:
                confirmed.add(fbest)
            linked.append(n_objects + fbest)

        if not linked:
            floating.append(_new_floating(box, noun.name, noun.qualifier, text))
            linked.append(n_objects + len(floating) - 1)

        ids = relations.setdefault(text, [])
        ids.extend(uid for uid in linked if uid not in ids)
    return confirmed, relations


# -- helpers ------------------------------------------------------------------------------------------------


def _caption_order(entry: dict[str, Any]) -> int:
    index = entry.get("caption_index")
    return int(index) if index is not None else 1 << 30


def _complete_object(obj: dict[str, Any]) -> dict[str, Any]:
    out = {name: obj.get(name) for name in _OBJECT_FIELDS}
    for name in ("labels", "qualifiers", "sources", "attributes"):
        out[name] = list(out[name] or [])
    if len(out["qualifiers"]) < len(out["labels"]):
        out["qualifiers"] += [""] * (len(out["labels"]) - len(out["qualifiers"]))
    return out


def _valid_box(box: Any, width: Any = None, height: Any = None) -> list[float] | None:
    """The box as four floats, corners ordered and clipped to the image when its size is known, or ``None``
    when it is null, not four finite numbers, or of zero area after clipping."""
    if box is None:
        return None
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = (
        min(values[0], values[2]),
        min(values[1], values[3]),
        max(values[0], values[2]),
        max(values[1], values[3]),
    )
    if width is not None and height is not None:
        x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
        y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    if x2 <= x1 or y2 <= y1:
        return None
    return [x1, y1, x2, y2]


def _boxes(records: list[dict[str, Any]]) -> np.ndarray:
    """``(N, 4)`` boxes of the records; a missing box becomes NaNs (never matches)."""
    out = np.full((len(records), 4), np.nan, dtype=np.float64)
    for i, rec in enumerate(records):
        box = rec.get("bbox")
        if box is not None and len(box) == 4:
            out[i] = [np.nan if v is None else float(v) for v in box]
    return out


def _best_match(box: list[float], boxes: np.ndarray, threshold: float, convention: str) -> int | None:
    """Index of the box with the highest IoU (first on ties) when it is > ``threshold``, else ``None``."""
    if len(boxes) == 0:
        return None
    ious = np.nan_to_num(iou_matrix(box, boxes, convention)[0], nan=-1.0)
    best = int(np.argmax(ious))
    return best if ious[best] > threshold else None


def _add_label(obj: dict[str, Any], name: str, qualifier: str) -> None:
    if name and name not in obj["labels"]:
        obj["labels"].append(name)
        obj["qualifiers"].append(qualifier)


def _add_source(obj: dict[str, Any], source: str) -> None:
    if source not in obj["sources"]:
        obj["sources"].append(source)


def _new_floating(box: list[float], noun: str, qualifier: str, phrase: str) -> dict[str, Any]:
    obj = dict.fromkeys(_OBJECT_FIELDS)
    obj.update(
        bbox=box,
        labels=[noun] if noun else [],
        qualifiers=[qualifier] if noun else [],
        sources=[GROUNDING_SOURCE],
        attributes=[phrase],
    )
    return obj


def _remap_affordance(
    affordance: dict[str, Any], old_to_uid: dict[int, int], uid_to_new: dict[int, int]
) -> dict[str, Any]:
    out = dict(affordance)
    ids = []
    for old in affordance.get("object_ids") or []:
        if old not in old_to_uid:
            raise ValueError(f"affordance {affordance.get('category')!r} names object id {old}, which does not exist")
        ids.append(uid_to_new[old_to_uid[old]])
    out["object_ids"] = sorted(ids)
    return out


# -- the stage ----------------------------------------------------------------------------------------------


@dataclass
class LinkPhrases(Stage):
    """Link grounded caption phrases to level-1 objects, promote confirmed floating objects, renumber."""

    name: ClassVar[str] = "link_phrases"
    requires: ClassVar[tuple[str, ...]] = ("level1", "caption_blip2", "caption_vlm", "ground_phrases")
    level: ClassVar[int | None] = 2
    schema: ClassVar[pa.Schema] = LEVEL2_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=256)

    iou_threshold: float = 0.75  # spec step 14b: phrase box ↔ object box IoU > 0.75 links them
    # step 14b's IoU: "continuous" (no +1, the project's) or "pixel" (the reference's +1; set by the grand manifest)
    iou_convention: str = "continuous"
    check_invariants: bool = True  # validate each output row (ids contiguous, objects first, links exist)

    def __post_init__(self) -> None:
        self.iou_convention = check_iou_convention(self.iou_convention, "link_phrases")

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        level1 = unit.input_row("level1", image_id)
        captions = [
            unit.input_row("caption_blip2", image_id).get("caption"),
            unit.input_row("caption_vlm", image_id).get("caption"),
        ]
        phrases = unit.input_row("ground_phrases", image_id).get("phrases") or []
        row = link_phrases(
            level1, captions, phrases, iou_threshold=self.iou_threshold, iou_convention=self.iou_convention
        )
        out = {name: row.get(name) for name in self.schema.names}
        out["image_id"] = image_id
        return self.require_valid(out, 2) if self.check_invariants else out
