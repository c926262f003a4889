"""``level1``: merge the detector side tables into the level-1 annotation (spec steps 10a and 10b).

For each image, in this order:

1. **Read** every merged slot (``sources``, in priority order). A slot whose table is not in the unit
   (disabled in the manifest) counts as empty. Labels are normalised once here
   (:func:`grand_engine.labels.normalise_label`: underscores → spaces, lower-case, LVIS qualifier split
   off); region-caption slots (``caption_sources``) carry ``descriptions`` instead of labels. A detection
   whose box or score is null/NaN/inf, or whose label/description is blank, is discarded (the reference's
   strict score tests already dropped NaN scores). Inverted corners are swapped and boxes are clipped to
   the image, so every later IoU is computed in the image frame (:mod:`grand_engine.geometry`). A row whose
   lists have different lengths is bad input: that image becomes an error row. Steps 1-3 run for the
   whole unit on its first image (:class:`_UnitDetections`): Arrow flattens each slot's table, one grouped
   self-NMS and one grouped candidate search cover every image and slot, and each image's result is exactly
   what the steps give it alone; an image then costs only its own voting loop.
2. **Self-NMS per slot** (step 10a, class-agnostic): drop score < ``nms_min_score``; by descending score,
   suppress every box with IoU > ``nms_iou`` to a kept box (continuous IoU, as the reference).
3. **Score filter per slot** (step 10b.1, strict ``>``): ``thresholds[slot]``; boxes labelled ``person``
   use ``person_thresholds[slot]`` for the slots listed there (the LVIS and closed-set slots).
4. **Voting** (step 10b.2): anchors are visited slot by slot in priority order, within a slot by
   descending score, skipping consumed boxes. An anchor absorbs every unconsumed box of every *later*
   slot with IoU ≥ ``vote_iou`` (several boxes of one slot included) and consumes them. The IoU follows
   ``iou_convention``: ``continuous`` (the project's, the default) or ``pixel``, the reference's +1 on every
   width and height, which the ``grand`` manifest sets to reproduce GranD's merges exactly (pairs near
   0.65 merge under one convention and not the other, most often for small boxes). Absorbed
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
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grand_engine.geometry import check_iou_convention, iou_pairs, nms
from grand_engine.labels import GENDER_TO_PERSON, affordance_index, affordance_table, normalise_label
from grand_engine.ovss import add_stuff_objects, regions_from_row
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


_Flat = tuple[np.ndarray, Any]  # per row: how many entries; then the entries of every row end to end


def _flatten_fast(table: pa.Table, text_column: str) -> tuple[_Flat, _Flat, _Flat] | None:
    """``boxes``, ``scores`` and the text column flattened by Arrow compute (boxes as an ``(N, 4)`` float64 array,
    scores as float64, texts as a list), or ``None`` when a null or an unexpected type is in the way."""
    out: list[_Flat] = []
    for name in ("boxes", "scores", text_column):
        if name not in table.column_names:
            return None
        col = table.column(name)
        if col.null_count or not pa.types.is_list(col.type):
            return None
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(col)
        if name == "boxes":
            if values.null_count or not (pa.types.is_fixed_size_list(values.type) or pa.types.is_list(values.type)):
                return None
            coords = pc.list_flatten(values)
            if coords.null_count or len(coords) != 4 * len(values) or not pa.types.is_floating(coords.type):
                return None
            items: Any = coords.to_numpy().astype(np.float64).reshape(-1, 4)
        elif name == "scores":
            if not pa.types.is_floating(values.type):
                return None
            items = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)  # a null score is NaN
        else:
            items = values.to_pylist()
        out.append((lengths, items))
    return out[0], out[1], out[2]


def _flatten_rows(table: pa.Table, text_column: str) -> tuple[_Flat, _Flat, _Flat]:
    """The same, row by row, for tables with nulls inside their lists: a null row is empty, a null box or
    coordinate reads as NaN and a null score as NaN (the filters then drop that detection)."""
    out: list[_Flat] = []
    for name in ("boxes", "scores", text_column):
        rows = table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
        lengths = np.asarray([len(v or ()) for v in rows], dtype=np.int64)
        entries = [item for v in rows for item in v or ()]
        if name == "boxes":
            items: Any = np.asarray(
                [
                    [math.nan if x is None else float(x) for x in b]
                    if b is not None and len(b) == 4
                    else [math.nan] * 4
                    for b in entries
                ],
                dtype=np.float64,
            ).reshape(-1, 4)
        elif name == "scores":
            items = np.asarray([math.nan if v is None else float(v) for v in entries], dtype=np.float64)
        else:
            items = entries
        out.append((lengths, items))
    return out[0], out[1], out[2]


@lru_cache(maxsize=256)
def _f32(value: float) -> float:
    """``value`` rounded to float32, as a Python float: scores are stored as float32, so thresholds compare at that
    precision (a score stored as 0.3 does not pass a 0.3 threshold, as in the reference, whose 2-decimal scores
    compared exactly)."""
    return float(np.float32(value))


class _UnitDetections:
    """Every merged slot's detections of one unit after steps 10a and 10b.1, and the voting candidates.

    Built on the unit's first image, for all of its images at once: the slot tables are flattened by Arrow, the
    boxes of every image and slot go through one grouped self-NMS and one grouped candidate search
    (:mod:`grand_engine.geometry`, ``groups=``), so an image then costs only its own voting loop. Per image the
    result is exactly what the steps give image by image. A row whose lists differ in length is not used; its
    image gets the error (``problems``) when it is merged.
    """

    def __init__(self, stage: Level1, unit: UnitInput) -> None:
        image_ids = unit.image_ids
        self.index = {image_id: k for k, image_id in enumerate(image_ids)}
        size = np.full((len(image_ids), 2), np.nan)
        for k, image_id in enumerate(image_ids):
            row = unit.image_row(image_id)
            w, h = row.get("width"), row.get("height")
            if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
                size[k] = (w, h)
        # image id -> the error of its first missing or malformed slot row, in priority order
        self.problems: dict[str, Exception] = {}
        img, rank, coords, scores, names, qualifiers = [], [], [], [], [], []
        for r, slot in enumerate(stage.sources):
            table = unit.inputs.get(slot)
            if table is None:  # disabled in the manifest: an empty slot
                continue
            is_caption = slot in stage.caption_sources
            text_column = "descriptions" if is_caption else "labels"
            row_ids = table.column("image_id").to_pylist()
            for image_id in self.index.keys() - set(row_ids):
                self.problems.setdefault(image_id, KeyError(f"the {slot} table has no row for image {image_id!r}"))
            flat = _flatten_fast(table, text_column) or _flatten_rows(table, text_column)
            (n_box, slot_coords), (n_score, slot_scores), (n_text, slot_texts) = flat
            row_img = np.asarray([self.index.get(i, -1) for i in row_ids], dtype=np.int64)
            usable = (n_box == n_score) & (n_score == n_text) & (row_img >= 0)
            for k in np.flatnonzero(~usable & (row_img >= 0)).tolist():
                self.problems.setdefault(
                    row_ids[k],
                    ValueError(
                        f"{slot} row of image {row_ids[k]!r} is malformed: {n_box[k]} boxes, {n_score[k]} scores, "
                        f"{n_text[k]} {text_column}"
                    ),
                )
            take_box = np.repeat(usable, n_box)
            take_text = np.repeat(usable, n_text).tolist() if not usable.all() else []
            img.append(np.repeat(row_img, n_box)[take_box])
            rank.append(np.full(int(take_box.sum()), r, dtype=np.int64))
            coords.append(slot_coords[take_box])
            scores.append(slot_scores[np.repeat(usable, n_score)])
            texts = slot_texts if usable.all() else [t for t, keep in zip(slot_texts, take_text, strict=True) if keep]
            # each distinct text is normalised once (a unit repeats a detector's vocabulary many times)
            if is_caption:
                spelt = {t: (" ".join(t.split()) if isinstance(t, str) else "", "") for t in set(texts)}
            else:
                spelt = {t: normalise_label(t) for t in set(texts)}
            labels = [spelt[t] for t in texts]
            names.extend([label[0] for label in labels])
            qualifiers.extend([label[1] for label in labels])
        self._select(stage, size, img, rank, coords, scores, names, qualifiers, len(image_ids))

    def _select(
        self,
        stage: Level1,
        size: np.ndarray,
        img_parts: list[np.ndarray],
        rank_parts: list[np.ndarray],
        coord_parts: list[np.ndarray],
        score_parts: list[np.ndarray],
        names: list[str],
        qualifiers: list[str],
        n_images: int,
    ) -> None:
        """Steps 10a and 10b.1 on every detection of the unit, then the voting candidates."""
        img = np.concatenate(img_parts) if img_parts else np.zeros(0, dtype=np.int64)
        rank = np.concatenate(rank_parts) if rank_parts else np.zeros(0, dtype=np.int64)
        coords = np.concatenate(coord_parts) if coord_parts else np.zeros((0, 4))
        scores = np.concatenate(score_parts) if score_parts else np.zeros(0)
        width, height = size[img, 0], size[img, 1]
        # step 10a: drop low scores (NaN fails too), blank texts and boxes with a NaN/inf coordinate
        valid = np.isfinite(coords).all(axis=1) & (scores >= _f32(stage.nms_min_score)) & np.isfinite(width)
        valid &= np.asarray([bool(name) for name in names], dtype=bool).reshape(-1)
        keep = np.flatnonzero(valid)
        # corners ordered, then clipped to the image (the same values as clip(order_corners(box), 0, size))
        c = coords[keep]
        w, h = width[keep], height[keep]
        c = np.stack(
            [
                np.minimum(np.maximum(np.minimum(c[:, 0], c[:, 2]), 0.0), w),
                np.minimum(np.maximum(np.minimum(c[:, 1], c[:, 3]), 0.0), h),
                np.minimum(np.maximum(np.maximum(c[:, 0], c[:, 2]), 0.0), w),
                np.minimum(np.maximum(np.maximum(c[:, 1], c[:, 3]), 0.0), h),
            ],
            axis=1,
        ).reshape(-1, 4)
        n_slots = len(stage.sources)
        # step 10a: class-agnostic self-NMS, each (image, slot) on its own; the kept boxes come back ordered by
        # image, then slot priority, then descending score: the order in which the voting visits them
        kept = nms(c, scores[keep], stage.nms_iou, groups=img[keep] * n_slots + rank[keep])
        survivors = keep[kept]
        # step 10b.1: per-slot score filter; person boxes of the listed slots use their own threshold
        general = np.asarray([_f32(stage.thresholds[slot]) for slot in stage.sources])
        person = np.asarray(
            [
                _f32(stage.person_thresholds[slot])
                if slot in stage.person_thresholds and slot not in stage.caption_sources
                else math.nan
                for slot in stage.sources
            ]
        )
        r = rank[survivors]
        is_person = np.asarray([names[k] == stage.person_label for k in survivors.tolist()], dtype=bool).reshape(-1)
        threshold = np.where(is_person & np.isfinite(person[r]), person[r], general[r])
        passed = scores[survivors] > threshold
        chosen = kept[passed]  # positions in `keep`
        survivors = survivors[passed]
        self.boxes: list[list[float]] = c[chosen].tolist()
        self.scores: list[float] = scores[survivors].tolist()
        self.names = [names[k] for k in survivors.tolist()]
        self.qualifiers = [qualifiers[k] for k in survivors.tolist()]
        ranks = rank[survivors]
        self.slots = [stage.sources[k] for k in ranks.tolist()]
        self.captions = [slot in stage.caption_sources for slot in self.slots]
        owner = img[survivors]
        self.start = np.searchsorted(owner, np.arange(n_images), side="left").tolist()
        self.end = np.searchsorted(owner, np.arange(n_images), side="right").tolist()
        # step 10b.2 candidates: for each box t, the boxes of later slots of the same image with IoU >= vote_iou,
        # in visiting order (slot priority, then descending score): candidates[first[t]:first[t + 1]]
        i, j, _ = iou_pairs(c[chosen], stage.vote_iou, stage.iou_convention, groups=owner)
        later = ranks[i] < ranks[j]
        i, j = i[later], j[later]
        self.first: list[int] = np.searchsorted(i, np.arange(len(survivors) + 1)).tolist()
        self.candidates: list[int] = j.tolist()


_UNITS: weakref.WeakKeyDictionary[UnitInput, dict[int, tuple[Any, _UnitDetections]]] = weakref.WeakKeyDictionary()
"""Each unit's detections per configured stage (keyed by the stage's id, the stage kept alive beside them)."""


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
    # step 10b.2: the voting IoU; "continuous" (no +1, the project's convention) or "pixel" (the reference's +1
    # on every width and height: the grand manifest sets it, to merge exactly as GranD did)
    iou_convention: str = "continuous"
    person_label: str = "person"  # step 10b.2: the label the person rules apply to (after normalisation)
    # not in GranD: the table whose stuff regions (CASS, the optional `ovss` stage) become objects; null: none
    stuff_source: str | None = None
    stuff_duplicate_iou: float = 0.5  # a stuff region whose mask IoU with an object is >= 0.5 duplicates it (chosen)
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
        self.iou_convention = check_iou_convention(self.iou_convention, "level1")

    def inputs(self) -> tuple[str, ...]:
        return ("images", "landmark", *self.sources, *((self.stuff_source,) if self.stuff_source else ()))

    # -- one image ----------------------------------------------------------------------------------

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        """The ``level1`` row of one image."""
        image = unit.image_row(image_id)
        width, height = image.get("width"), image.get("height")
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise ValueError(f"image {image_id!r} has no valid size (width={width!r}, height={height!r})")
        objects, floating, floating_attributes = self._vote(self._detections(unit), image_id)
        for i, obj in enumerate(objects):
            obj["id"] = i
            _gender_normalise(obj)
        for i, obj in enumerate(floating):
            obj["id"] = len(objects) + i
        if self.stuff_source:
            where = f"{self.stuff_source} row of {image_id!r}"
            regions = regions_from_row(unit.input_row(self.stuff_source, image_id), height, width, where=where)
            objects, floating = add_stuff_objects(
                objects, floating, regions, width, height, duplicate_iou=self.stuff_duplicate_iou
            )
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

    def _detections(self, unit: UnitInput) -> _UnitDetections:
        """The unit's detections after steps 10a-10b.1, computed on its first image (see :class:`_UnitDetections`)."""
        per_stage = _UNITS.get(unit)
        if per_stage is None:
            per_stage = _UNITS[unit] = {}
        found = per_stage.get(id(self))
        if found is None:
            found = per_stage[id(self)] = (self, _UnitDetections(self, unit))
        return found[1]

    def _vote(self, found: _UnitDetections, image_id: str) -> tuple[list[dict], list[dict], list[dict]]:
        """Cross-model voting over one image's filtered detections (step 10b.2)."""
        if image_id in found.problems:
            raise found.problems[image_id]
        k = found.index[image_id]
        candidates, first, captions, names = found.candidates, found.first, found.captions, found.names
        consumed: set[int] = set()
        objects: list[dict] = []
        floating: list[dict] = []
        floating_attributes: list[dict] = []
        for t in range(found.start[k], found.end[k]):  # slot priority, then descending score
            if t in consumed:
                continue
            lo, hi = first[t], first[t + 1]
            absorbed = [m for m in candidates[lo:hi] if m not in consumed] if hi > lo else []
            if not absorbed and captions[t]:  # an unmatched region caption
                floating_attributes.append(
                    {"bbox": list(found.boxes[t]), "score": found.scores[t], "attributes": [names[t]]}
                )
                continue
            consumed.update(absorbed)
            obj = _make_object(found, t, absorbed)
            if absorbed and obj["labels"]:
                objects.append(obj)
            elif not obj["labels"]:  # a caption anchor that absorbed only captions
                floating_attributes.append(
                    {"bbox": obj["bbox"], "score": obj["score"], "attributes": obj["attributes"]}
                )
            elif obj["labels"][0] == self.person_label:
                single = self.single_person_thresholds.get(found.slots[t])
                if single is None:
                    continue  # person seen by an open-vocabulary slot only: dropped
                if obj["score"] > _f32(single):
                    objects.append(obj)
                elif obj["score"] > _f32(self.thresholds[found.slots[t]]):
                    floating.append(obj)
            else:
                floating.append(obj)
        return objects, floating, floating_attributes


_OBJECT_TEMPLATE: dict[str, Any] = dict.fromkeys(_OBJECT_FIELDS)


def _make_object(found: _UnitDetections, t: int, absorbed: list[int]) -> dict[str, Any]:
    """An object record from its anchor (detection ``t``) and the detections it absorbed."""
    obj = _OBJECT_TEMPLATE.copy()
    obj["bbox"] = list(found.boxes[t])
    obj["score"] = found.scores[t]
    if not absorbed:  # the common case: one detection
        caption = found.captions[t]
        obj["labels"] = [] if caption else [found.names[t]]
        obj["qualifiers"] = [] if caption else [found.qualifiers[t]]
        obj["sources"] = [found.slots[t]]
        obj["attributes"] = [found.names[t]] if caption else []
        return obj
    labels: dict[str, str] = {}
    attributes: dict[str, None] = {}
    sources: dict[str, None] = {}
    for m in (t, *absorbed):
        sources.setdefault(found.slots[m], None)
        if found.captions[m]:
            attributes.setdefault(found.names[m], None)
        else:
            labels.setdefault(found.names[m], found.qualifiers[m])
    obj["labels"] = list(labels)
    obj["qualifiers"] = list(labels.values())
    obj["sources"] = list(sources)
    obj["attributes"] = list(attributes)
    return obj


def _gender_normalise(obj: dict[str, Any]) -> None:
    """Step 10b.6 on one object: man/woman/men/women → person, then deduplicate (qualifier of the first)."""
    labels = obj["labels"]
    if not any(name in GENDER_TO_PERSON for name in labels):  # labels are normalised: lower case, single spaces
        return
    merged: dict[str, str] = {}
    for name, qualifier in zip(labels, obj["qualifiers"], strict=True):
        merged.setdefault(GENDER_TO_PERSON.get(name, name), qualifier)
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
