"""``level1``: merge the detector side tables into the level-1 annotation (spec steps 10a and 10b).

For each image, in this order:

1. **Read** every merged slot (``sources``, in priority order). A slot whose table is not in the unit
   (disabled in the manifest) counts as empty. Labels are normalised once here
   (:func:`grand_engine.labels.normalise_label`: underscores → spaces, lower-case, LVIS qualifier split
   off); region-caption slots (``caption_sources``) carry ``descriptions`` instead of labels. A detection
   whose box or score is null/NaN/inf, or whose label/description is blank, is discarded (the reference's
   strict score tests already dropped NaN scores). Inverted corners are swapped and boxes are clipped to
   the image, so every later IoU is computed in the image frame (:mod:`grand_engine.geometry`: continuous
   IoU, no +1, the only convention of the project). A row whose lists have different lengths is bad
   input: that image becomes an error row.
2. **Self-NMS per slot** (step 10a, class-agnostic): drop score < ``nms_min_score``; by descending score,
   suppress every box with IoU > ``nms_iou`` to a kept box.
3. **Score filter per slot** (step 10b.1, strict ``>``): ``thresholds[slot]``; boxes labelled ``person``
   use ``person_thresholds[slot]`` for the slots listed there (the LVIS and closed-set slots).
4. **Voting** (step 10b.2): anchors are visited slot by slot in priority order, within a slot by
   descending score, skipping consumed boxes. An anchor absorbs every unconsumed box of every *later*
   slot with IoU ≥ ``vote_iou`` (several boxes of one slot included) and consumes them. Absorbed
   detector labels join the anchor's ``labels``; absorbed region captions join its ``attributes`` and
   count as agreement. The anchor's box and score are kept as they are (never averaged).

   * matched → ``objects``;
   * unmatched detector anchor labelled ``person`` from a slot of ``single_person_thresholds`` →
     ``objects`` if score > that threshold, else ``floating_objects`` if score > ``thresholds[slot]``,
     else dropped;
   * unmatched ``person`` from any other slot → dropped;
   * any other unmatched detector anchor → ``floating_objects``;
   * unmatched region caption → ``floating_attributes``. (With the default order the caption slot is
     last, so a caption anchor never matches. If a manifest orders a caption slot earlier, a caption
     anchor that absorbs detector boxes becomes an object with their labels; one that absorbs only
     other captions has no label and goes to ``floating_attributes`` with all the descriptions.)

   The Dice test of the reference is not reproduced: for boxes it is implied by IoU ≥ 0.65 (spec §0.3).
5. **Labels**: deduplicated by normalised name in first-seen order (anchor first, then absorbed boxes in
   priority/score order), ``qualifiers`` aligned with them; ``sources`` lists the voting slots once each,
   anchor first; ``attributes`` the absorbed descriptions (deduplicated; an empty list, not null).
   Gender normalisation (step 10b.6) maps ``man``/``woman``/``men``/``women`` to ``person`` in
   ``objects`` only, then deduplicates again (the reference left duplicates).
6. **Ids** (step 10b.3): objects ``0 … n-1`` in creation order, then floating objects ``n … m-1``.
7. **Affordances** (step 10b.5): every normalised label of every object and floating object that equals
   a label of the affordance table adds that id and label to the category; one entry per category with
   a match, in table order, ``object_ids`` sorted, ``labels`` deduplicated in id order. Because both
   sides are normalised, ``baseball_bat`` now matches ``baseball bat`` (spec §12).
8. **Landmark** comes from the ``landmark`` table (null when that stage is absent).

Every output row is checked with :func:`grand_engine.validate.validate_annotation` (``check_invariants``);
a row that breaks an invariant becomes that image's error row instead of bad data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import clip_boxes, iou_pairs, nms, order_corners
from grand_engine.labels import affordance_index, affordance_table, gender_normalise, normalise_label
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import AFFORDANCE, FLOATING_ATTRIBUTE, LANDMARK, OBJECT, table_schema

DEFAULT_SOURCES: tuple[str, ...] = (
    "detect_lvis",  # EVA-02 (eva-02-01); the reference's eva-02-02 run never survived (§14.25)
    "detect_closed",  # Co-DETR
    "sam_classify",  # OV-SAM
    "detect_ov",  # OWL-ViT
    "detect_ov2",  # POMP
    "region_captions",  # GRiT, always last
)
"""Merged slots in voting priority order (spec step 10b.2)."""

SCORE_THRESHOLDS: dict[str, float] = {
    "detect_lvis": 0.6,  # eva-02, step 10b.1
    "detect_closed": 0.2,  # co_detr, step 10b.1
    "sam_classify": 0.3,  # ov_sam, step 10b.1
    "detect_ov": 0.1,  # owl_vit, step 10b.1
    "detect_ov2": 0.3,  # pomp, step 10b.1
    "region_captions": 0.3,  # grit, step 10b.1 (the model itself already keeps only > 0.7)
}
"""General per-slot score thresholds (strict ``>``)."""

PERSON_THRESHOLDS: dict[str, float] = {
    "detect_lvis": 0.2,  # eva-02 person boxes, step 10b.1
    "detect_closed": 0.2,  # co_detr person boxes, step 10b.1
}
"""Score thresholds for ``person`` boxes of the closed-set and LVIS slots (strict ``>``)."""

SINGLE_PERSON_THRESHOLDS: dict[str, float] = {
    "detect_lvis": 0.75,  # eva-02 "single person", step 10b.2
    "detect_closed": 0.5,  # co_detr "single person", step 10b.2
}
"""Score above which an unmatched ``person`` of these slots still becomes an object."""

LEVEL1_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("objects", pa.list_(OBJECT)),
    ("floating_objects", pa.list_(OBJECT)),
    ("floating_attributes", pa.list_(FLOATING_ATTRIBUTE)),
    ("landmark", LANDMARK),
    ("affordances", pa.list_(AFFORDANCE)),
)
"""The ``level1`` table's columns after ``image_id``."""

LEVEL1_SCHEMA = table_schema(*LEVEL1_FIELDS, version="1")

_OBJECT_FIELDS = tuple(OBJECT.field(i).name for i in range(OBJECT.num_fields))


@dataclass
class _SlotBoxes:
    """One slot's surviving detections for one image, in descending score order."""

    slot: str
    is_caption: bool
    boxes: np.ndarray  # (n, 4) float64, clipped, corners ordered
    scores: np.ndarray  # (n,) float32
    names: list[str]  # normalised label names, or descriptions for a caption slot
    qualifiers: list[str]


@dataclass
class Level1(Stage):
    """Per-model self-NMS, score filters, cross-model voting, floating objects, affordances."""

    name = "level1"
    requires = ("images", "landmark", *DEFAULT_SOURCES)
    level = 1
    version = "1"
    schema = LEVEL1_SCHEMA
    default_resources: ClassVar[Resources] = Resources(gpus=0.0, cpus=1.0, batch_size=64)

    sources: tuple[str, ...] = DEFAULT_SOURCES  # merged slots in priority order (step 10b.2)
    caption_sources: tuple[str, ...] = ("region_captions",)  # slots with `descriptions` (GRiT), not labels
    nms_min_score: float = 0.1  # step 10a: drop score < 0.1 before self-NMS
    nms_iou: float = 0.9  # step 10a: self-NMS suppresses IoU > 0.9
    thresholds: dict[str, float] = field(default_factory=lambda: dict(SCORE_THRESHOLDS))  # step 10b.1
    person_thresholds: dict[str, float] = field(default_factory=lambda: dict(PERSON_THRESHOLDS))  # step 10b.1
    single_person_thresholds: dict[str, float] = field(
        default_factory=lambda: dict(SINGLE_PERSON_THRESHOLDS)
    )  # step 10b.2
    vote_iou: float = 0.65  # step 10b.2: IoU >= 0.65 is agreement (the reference's Dice >= 0.75 is implied)
    person_label: str = "person"  # step 10b.2: the label the person rules apply to (after normalisation)
    check_invariants: bool = True  # validate each row; a broken invariant becomes an error row

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        self.caption_sources = tuple(self.caption_sources)
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"level1: duplicate slot in sources {list(self.sources)}")
        # A manifest overriding one slot's threshold keeps the defaults of the others.
        self.thresholds = {**SCORE_THRESHOLDS, **dict(self.thresholds)}
        self.person_thresholds = dict(self.person_thresholds)
        self.single_person_thresholds = dict(self.single_person_thresholds)
        missing = [s for s in self.sources if s not in self.thresholds]
        if missing:
            raise ValueError(
                f"level1: no score threshold for source(s) {', '.join(map(repr, missing))}; "
                "add them to the `thresholds` parameter"
            )
        numbers = {name: getattr(self, name) for name in ("nms_min_score", "nms_iou", "vote_iou")}
        for table in ("thresholds", "person_thresholds", "single_person_thresholds"):
            numbers.update({f"{table}[{slot!r}]": v for slot, v in getattr(self, table).items()})
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"level1: parameter {name} must be a finite number, got {value!r}")

    def inputs(self) -> tuple[str, ...]:
        return ("images", "landmark", *self.sources)

    # -- one image ----------------------------------------------------------------------------------

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        """The ``level1`` row of one image."""
        image = unit.image_row(image_id)
        width, height = image.get("width"), image.get("height")
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise ValueError(f"image {image_id!r} has no valid size (width={width!r}, height={height!r})")
        slots = [self._read_slot(unit, slot, image_id, width, height) for slot in self.sources]
        objects, floating, floating_attributes = self._vote(slots)
        for i, obj in enumerate(objects):
            obj["id"] = i
            _gender_normalise(obj)
        for i, obj in enumerate(floating):
            obj["id"] = len(objects) + i
        row = {
            "image_id": image_id,
            "width": width,
            "height": height,
            "objects": objects,
            "floating_objects": floating,
            "floating_attributes": floating_attributes,
            "landmark": self._landmark(unit, image_id),
            "affordances": affordances_for([*objects, *floating]),
        }
        return self.require_valid(row, 1) if self.check_invariants else row

    def _landmark(self, unit: UnitInput, image_id: str) -> dict[str, Any] | None:
        if "landmark" not in unit.inputs:
            return None
        row = unit.input_row("landmark", image_id)
        if row.get("category") is None and row.get("fine_category") is None:
            return None
        return {"category": row.get("category"), "fine_category": row.get("fine_category")}

    def _read_slot(self, unit: UnitInput, slot: str, image_id: str, width: int, height: int) -> _SlotBoxes:
        is_caption = slot in self.caption_sources
        if slot not in unit.inputs:
            return _SlotBoxes(slot, is_caption, np.zeros((0, 4)), np.zeros(0, dtype=np.float32), [], [])
        row = unit.input_row(slot, image_id)
        text_column = "descriptions" if is_caption else "labels"
        boxes = row.get("boxes") or []
        scores = row.get("scores") or []
        texts = row.get(text_column) or []
        if not len(boxes) == len(scores) == len(texts):
            raise ValueError(
                f"{slot} row of image {image_id!r} is malformed: {len(boxes)} boxes, {len(scores)} scores, "
                f"{len(texts)} {text_column}"
            )
        if is_caption:
            labels = [(" ".join(t.split()) if isinstance(t, str) else "", "") for t in texts]
        else:
            labels = [normalise_label(t) for t in texts]
        box_arr = np.array(
            [b if b is not None and len(b) == 4 else (math.nan,) * 4 for b in boxes], dtype=np.float64
        ).reshape(-1, 4)
        # Scores are stored as float32; thresholds are compared at that precision, so a score stored as 0.3
        # does not pass a 0.3 threshold (as in the reference, whose 2-decimal scores compared exactly).
        score_arr = np.array([math.nan if s is None else s for s in scores], dtype=np.float32)
        valid = np.isfinite(box_arr).all(axis=1) & np.isfinite(score_arr)
        valid &= np.array([bool(name) for name, _ in labels], dtype=bool).reshape(-1)
        # step 10a: drop low scores, then class-agnostic self-NMS
        valid &= score_arr >= np.float32(self.nms_min_score)
        idx = np.flatnonzero(valid)
        box_arr = clip_boxes(order_corners(box_arr[idx]), width, height)
        score_arr = score_arr[idx]
        keep = nms(box_arr, score_arr, self.nms_iou)
        # step 10b.1: per-slot score filter, person boxes of the listed slots use their own threshold
        general = np.float32(self.thresholds[slot])
        person_thr = self.person_thresholds.get(slot)
        person_thr = None if person_thr is None else np.float32(person_thr)
        names: list[str] = []
        qualifiers: list[str] = []
        final: list[int] = []
        for k in keep.tolist():
            name, qualifier = labels[idx[k]]
            thr = person_thr if person_thr is not None and not is_caption and name == self.person_label else general
            if score_arr[k] > thr:
                final.append(k)
                names.append(name)
                qualifiers.append(qualifier)
        return _SlotBoxes(slot, is_caption, box_arr[final], score_arr[final], names, qualifiers)

    def _vote(self, slots: list[_SlotBoxes]) -> tuple[list[dict], list[dict], list[dict]]:
        """Cross-model voting over the filtered slots (step 10b.2)."""
        counts = [len(s.scores) for s in slots]
        total = sum(counts)
        if total == 0:
            return [], [], []
        boxes = np.concatenate([s.boxes for s in slots]).reshape(-1, 4)
        slot_of = np.repeat(np.arange(len(slots)), counts)
        local = np.concatenate([np.arange(c) for c in counts])
        indptr, indices = _vote_candidates(boxes, slot_of, self.vote_iou)

        consumed = np.zeros(total, dtype=bool)
        objects: list[dict] = []
        floating: list[dict] = []
        floating_attributes: list[dict] = []
        for t in range(total):
            if consumed[t]:
                continue
            consumed[t] = True
            lo, hi = indptr[t], indptr[t + 1]
            absorbed: list[int] = []
            if hi > lo:
                cand = indices[lo:hi]
                cand = cand[~consumed[cand]]
                consumed[cand] = True
                absorbed = cand.tolist()
            anchor = slots[slot_of[t]]
            members = [(slots[slot_of[m]], int(local[m])) for m in (t, *absorbed)]
            obj = _make_object(anchor, int(local[t]), members)
            if absorbed and obj["labels"]:
                objects.append(obj)
            elif anchor.is_caption or not obj["labels"]:
                floating_attributes.append(
                    {"bbox": obj["bbox"], "score": obj["score"], "attributes": obj["attributes"]}
                )
            elif obj["labels"][0] == self.person_label:
                single = self.single_person_thresholds.get(anchor.slot)
                if single is None:
                    continue  # person seen by an open-vocabulary slot only: dropped
                if _above(obj["score"], single):
                    objects.append(obj)
                elif _above(obj["score"], self.thresholds[anchor.slot]):
                    floating.append(obj)
            else:
                floating.append(obj)
        return objects, floating, floating_attributes


def _above(score: float, threshold: float) -> bool:
    """``score > threshold`` at the float32 precision scores are stored at."""
    return bool(np.float32(score) > np.float32(threshold))


def _vote_candidates(boxes: np.ndarray, slot_of: np.ndarray, threshold: float) -> tuple[list[int], np.ndarray]:
    """CSR lists of the later-slot boxes each box agrees with (IoU ≥ ``threshold``).

    ``boxes`` are concatenated slot by slot in priority order, so row ``t`` lists, in ascending index
    order (= priority, then descending score), the boxes of slots after ``t``'s slot.
    """
    total = len(boxes)
    i, j, _ = iou_pairs(boxes, threshold)  # i < j, sorted by (i, j)
    later = slot_of[i] < slot_of[j]
    i, j = i[later], j[later]
    indptr = np.searchsorted(i, np.arange(total + 1)).tolist()
    return indptr, j


def _make_object(anchor: _SlotBoxes, k: int, members: list[tuple[_SlotBoxes, int]]) -> dict[str, Any]:
    """An object record from its anchor (box ``k`` of ``anchor``) and every member (anchor first)."""
    labels: dict[str, str] = {}
    attributes: dict[str, None] = {}
    sources: dict[str, None] = {}
    for slot, i in members:
        sources.setdefault(slot.slot, None)
        if slot.is_caption:
            attributes.setdefault(slot.names[i], None)
        else:
            labels.setdefault(slot.names[i], slot.qualifiers[i])
    obj = dict.fromkeys(_OBJECT_FIELDS)
    obj.update(
        bbox=[float(v) for v in anchor.boxes[k]],
        labels=list(labels),
        qualifiers=list(labels.values()),
        score=float(anchor.scores[k]),
        sources=list(sources),
        attributes=list(attributes),
    )
    return obj


def _gender_normalise(obj: dict[str, Any]) -> None:
    """Step 10b.6 on one object: man/woman/men/women → person, then deduplicate (qualifier of the first)."""
    merged: dict[str, str] = {}
    for name, qualifier in zip(obj["labels"], obj["qualifiers"], strict=True):
        merged.setdefault(gender_normalise(name), qualifier)
    obj["labels"] = list(merged)
    obj["qualifiers"] = list(merged.values())


def affordances_for(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Affordance records for objects/floating objects with ids (step 10b.5), in affordance-table order."""
    table = affordance_table()
    index = affordance_index()
    hits: dict[int, tuple[set[int], dict[str, None]]] = {}
    for obj in sorted(entries, key=lambda o: o["id"]):
        for name in obj.get("labels") or []:
            for cat in index.get(name, ()):
                ids, names = hits.setdefault(cat, (set(), {}))
                ids.add(int(obj["id"]))
                names.setdefault(name, None)
    return [
        {
            "category": table[cat].category,
            "description": table[cat].description,
            "object_ids": sorted(ids),
            "labels": list(names),
        }
        for cat, (ids, names) in sorted(hits.items())
    ]
