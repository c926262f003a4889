"""``level2``: the complete annotation as of level 2 (GranD steps 14b–17 assembled).

Input: the ``link_phrases`` row (step 14b: grounded phrases linked, confirmed floating objects promoted, ids
renumbered, ``relationships``, ``captions``) and the per-object side tables keyed by its ids. For each image:

1. **Region attributes** (step 15) — an object with a ``region_attributes`` description gets
   ``attributes = [description] + its region-caption attributes`` (the description is not repeated when it
   equals one of them). The reference kept only the first region caption (§14.33); all are kept. A
   description for an id that is not an object is an error. The description is cleaned again with
   :func:`grand_engine.stages.region_attributes.clean_description` (a leaked "ASSISTANT:" prefix is dropped).
2. **Label** (steps 16–17) — for every object *and* floating object: the ``label_assign`` choice when there is
   one, else ``labels[0]`` (null when the object has no label), then the person normalisation of
   :func:`grand_engine.labels.person_normalise` (a symmetric singular → ``person`` / plural → ``persons`` table;
   the reference's table lacked ``female`` and ``males``, §14.42). When the normalised word is not yet among the
   object's ``labels`` it is **appended** to them (qualifier ``""``), so ``label ∈ labels`` always holds and
   ``label`` carries the normalised word the reference wrote (``man`` → ``person``). The reference gave floating
   objects no ``label``; here they get one too, by the same rule. A ``label_assign`` choice that is not one of
   the object's labels is an error.
3. **Depth** (step 17) — ``depth`` and ``depth_note`` from ``object_depth`` for objects and floating objects
   (a non-finite depth is stored as null, never NaN).
4. **Big-box promotion** (step 15, ``add_big_bboxes``) — floating objects whose box covers more than
   ``promote_area_fraction`` (50 %) of the image *and* is larger than the largest object box are candidates;
   per ``label`` the highest-score candidate (a null score ranks last; ties go to the first) is promoted to
   ``objects`` when no object has that label, or when its score beats the best score among the objects with
   that label. Candidates without a label are not promoted. The reference compared labels before label
   assignment and kept the promoted objects' floating ids (§14.34); here the chosen labels are compared and
   ids are renumbered.
5. **Renumbering** — objects in their order, then the promoted ones (in floating order), get ``0..n-1``; the
   remaining floating objects follow. Every id-bearing field is remapped: ``relationships`` (order kept) and
   ``affordances`` (sorted, as ``level1`` writes them). The side-table results were joined in steps 1–3 under
   the ``link_phrases`` ids, before renumbering, so they stay on the right object.

Every output row is checked with :func:`grand_engine.validate.validate_annotation` at level 2
(``check_invariants``); a row that breaks an invariant, or side tables that disagree with the ``link_phrases``
ids, make that image an error row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.geometry import box_area
from grand_engine.labels import person_normalise
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import OBJECT
from grand_engine.stages.link_phrases import LEVEL2_FIELDS, LEVEL2_SCHEMA, RELATIONSHIP
from grand_engine.stages.region_attributes import clean_description

__all__ = ["LEVEL2_FIELDS", "LEVEL2_SCHEMA", "RELATIONSHIP", "Level2", "assemble_level2"]

_OBJECT_FIELDS = tuple(OBJECT.field(i).name for i in range(OBJECT.num_fields))


def assemble_level2(
    row: dict[str, Any],
    descriptions: list[dict[str, Any]] | None = None,
    assignments: list[dict[str, Any]] | None = None,
    depths: list[dict[str, Any]] | None = None,
    promote_area_fraction: float = 0.5,
) -> dict[str, Any]:
    """The ``level2`` row of one image from its ``link_phrases`` row and its side-table entries.

    ``descriptions`` are ``region_attributes`` entries (``object_id``, ``description``), ``assignments``
    ``label_assign`` entries (``object_id``, ``label``, ``score``), ``depths`` ``object_depth`` entries
    (``object_id``, ``depth``, ``depth_note``); all keyed by the row's ids. The input row is not modified.
    Raises ``ValueError`` when ids are duplicated or a side-table entry does not fit the row.
    """
    objects = [_copy_object(o) for o in row.get("objects") or []]
    floating = [_copy_object(o) for o in row.get("floating_objects") or []]
    by_id = _index_by_id(objects + floating)
    _apply_descriptions(by_id, {int(o["id"]) for o in objects}, descriptions or [])
    _apply_labels(by_id, assignments or [])
    if depths is not None:
        _apply_depths(by_id, depths)
    promoted = promote_big_boxes(objects, floating, row.get("width"), row.get("height"), promote_area_fraction)
    return _renumber(row, objects, floating, promoted)


def _index_by_id(entries: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Objects then floating objects by id; ``ValueError`` for a missing or repeated id."""
    by_id: dict[int, dict[str, Any]] = {}
    for obj in entries:
        oid = obj.get("id")
        if oid is None or int(oid) in by_id:
            raise ValueError(f"link_phrases id {oid!r} is missing or used by more than one object")
        by_id[int(oid)] = obj
    return by_id


def _apply_descriptions(
    by_id: dict[int, dict[str, Any]], object_ids: set[int], descriptions: list[dict[str, Any]]
) -> None:
    """Step 1: each cleaned description goes first among its object's attributes (not repeated)."""
    for entry in descriptions:
        oid = int(entry["object_id"])
        if oid not in object_ids:
            raise ValueError(f"region_attributes describes id {oid}, which is not an object of link_phrases")
        text = clean_description(entry.get("description"))
        if text:
            obj = by_id[oid]
            obj["attributes"] = [text] + [a for a in obj["attributes"] if a != text]


def _apply_labels(by_id: dict[int, dict[str, Any]], assignments: list[dict[str, Any]]) -> None:
    """Step 2: every object's ``label`` from its ``label_assign`` choice, else its first label."""
    chosen: dict[int, str] = {}
    for entry in assignments:
        oid = int(entry["object_id"])
        if oid not in by_id:
            raise ValueError(f"label_assign names id {oid}, which does not exist in link_phrases")
        label = entry.get("label")
        if label is not None and label not in by_id[oid]["labels"]:
            raise ValueError(
                f"label_assign chose {label!r} for id {oid}, not one of its labels {by_id[oid]['labels']}"
            )
        if label is not None:
            chosen[oid] = label
    for oid, obj in by_id.items():
        _set_label(obj, chosen.get(oid))


def _apply_depths(by_id: dict[int, dict[str, Any]], depths: list[dict[str, Any]]) -> None:
    """Step 3: ``depth`` and ``depth_note`` of every object; ``ValueError`` when one has no entry."""
    seen_depth: set[int] = set()
    for entry in depths:
        oid = int(entry["object_id"])
        if oid not in by_id:
            raise ValueError(f"object_depth names id {oid}, which does not exist in link_phrases")
        depth = entry.get("depth")
        finite = depth is not None and math.isfinite(float(depth))
        by_id[oid]["depth"] = float(depth) if finite else None
        by_id[oid]["depth_note"] = entry.get("depth_note") if finite or depth is None else "no finite depth in region"
        seen_depth.add(oid)
    if seen_depth != set(by_id):
        missing = sorted(set(by_id) - seen_depth)
        raise ValueError(f"object_depth has no entry for ids {missing}")


def _renumber(
    row: dict[str, Any], objects: list[dict[str, Any]], floating: list[dict[str, Any]], promoted: list[int]
) -> dict[str, Any]:
    """Step 5: a copy of ``row`` with objects, promoted and remaining floating objects numbered ``0..n-1`` and
    every id-bearing field remapped."""
    out = dict(row)
    new_order = objects + [floating[i] for i in promoted] + [f for i, f in enumerate(floating) if i not in promoted]
    old_to_new = {int(obj["id"]): new for new, obj in enumerate(new_order)}
    for new, obj in enumerate(new_order):
        obj["id"] = new
    n_objects = len(objects) + len(promoted)
    out["objects"] = new_order[:n_objects]
    out["floating_objects"] = new_order[n_objects:]
    out["relationships"] = [
        {**rel, "object_ids": [_remap(old_to_new, oid, "relationship") for oid in rel.get("object_ids") or []]}
        for rel in row.get("relationships") or []
    ]
    out["affordances"] = [
        {**aff, "object_ids": sorted(_remap(old_to_new, oid, "affordance") for oid in aff.get("object_ids") or [])}
        for aff in row.get("affordances") or []
    ]
    return out


def promote_big_boxes(
    objects: list[dict[str, Any]],
    floating: list[dict[str, Any]],
    width: Any,
    height: Any,
    area_fraction: float = 0.5,
) -> list[int]:
    """Positions in ``floating`` of the big boxes to promote (step 15, see the module docstring), ascending."""
    if not width or not height or not floating:
        return []
    image_area = float(width) * float(height)
    largest = max((box_area(o["bbox"]) for o in objects), default=0.0)
    best_by_label: dict[str, int] = {}
    for i, obj in enumerate(floating):
        area = box_area(obj["bbox"])
        label = obj.get("label")
        if label is None or area <= area_fraction * image_area or area <= largest:
            continue
        current = best_by_label.get(label)
        if current is None or _score(obj) > _score(floating[current]):
            best_by_label[label] = i
    promoted = []
    for label, i in best_by_label.items():
        rivals = [_score(o) for o in objects if o.get("label") == label]
        if not rivals or _score(floating[i]) > max(rivals):
            promoted.append(i)
    return sorted(promoted)


# -- helpers ------------------------------------------------------------------------------------------------


def _copy_object(obj: dict[str, Any]) -> dict[str, Any]:
    out = {name: obj.get(name) for name in _OBJECT_FIELDS}
    for name in ("labels", "qualifiers", "sources", "attributes"):
        out[name] = list(out[name] or [])
    if len(out["qualifiers"]) < len(out["labels"]):
        out["qualifiers"] += [""] * (len(out["labels"]) - len(out["qualifiers"]))
    return out


def _set_label(obj: dict[str, Any], choice: str | None) -> None:
    """``label`` = the CLIP choice, else ``labels[0]``, person-normalised; the normalised word joins ``labels``."""
    label = choice if choice is not None else (obj["labels"][0] if obj["labels"] else None)
    if label is None:
        obj["label"] = None
        return
    normalised = person_normalise(label)
    if normalised not in obj["labels"]:
        obj["labels"].append(normalised)
        obj["qualifiers"].append("")
    obj["label"] = normalised


def _score(obj: dict[str, Any]) -> float:
    score = obj.get("score")
    return float(score) if score is not None and math.isfinite(float(score)) else -math.inf


def _remap(old_to_new: dict[int, int], oid: int, what: str) -> int:
    if oid not in old_to_new:
        raise ValueError(f"{what} names object id {oid}, which does not exist in link_phrases")
    return old_to_new[oid]


# -- the stage ----------------------------------------------------------------------------------------------


@dataclass
class Level2(Stage):
    """Assemble the level-2 annotation: link_phrases + region attributes + labels + depth + big-box promotion."""

    name: ClassVar[str] = "level2"
    requires: ClassVar[tuple[str, ...]] = ("link_phrases", "region_attributes", "label_assign", "object_depth")
    level: ClassVar[int | None] = 2
    schema: ClassVar[pa.Schema] = LEVEL2_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=256)

    promote_area_fraction: float = 0.5  # spec step 15: floating boxes covering > 50 % of the image are candidates
    check_invariants: bool = True  # validate each output row (ids contiguous, objects first, label ∈ labels, …)

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = assemble_level2(
            unit.input_row("link_phrases", image_id),
            descriptions=unit.input_row("region_attributes", image_id).get("descriptions") or [],
            assignments=unit.input_row("label_assign", image_id).get("assignments") or [],
            depths=unit.input_row("object_depth", image_id).get("depths") or [],
            promote_area_fraction=self.promote_area_fraction,
        )
        out = {name: row.get(name) for name in self.schema.names}
        out["image_id"] = image_id
        return self.require_valid(out, 2) if self.check_invariants else out
