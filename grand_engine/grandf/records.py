"""Record builders of every export format, and the checks each record passes before it is written.

Pure functions of one table row (a ``level3``/``level4`` row, or a ``grandf`` row): they are what
:mod:`grand_engine.grandf.exports` streams, and what the tests check with known answers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from grand_engine.grandf.gcg import gcg_groundings, mask_index
from grand_engine.io import rle
from grand_engine.validate import validate_annotation

SEGMENTATION_SOURCE_NAMES = {"sa1b": "SAM", "detector": "EVA", "sam": "HQ_SAM"}
"""Our ``segmentation_source`` values → the names the released GranD files use (spec §7 steps 21–22)."""

_ASSISTANT_PREFIX = re.compile(r"^\s*(?:assistant|istant)\s*:?\s*", flags=re.IGNORECASE)
"""Leaked chat prefixes stripped from region attributes (spec §10, referring expressions)."""


def _num(value: Any, digits: int = 3) -> float | None:
    """A float rounded for JSON (float32 columns otherwise print as 12.300000190734863), or None."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, digits)


def _box(box: Any) -> list[float] | None:
    return None if box is None else [_num(v, 3) for v in box]


def xyxy_to_xywh(box: Any) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [_num(x1, 3), _num(y1, 3), _num(x2 - x1, 3), _num(y2 - y1, 3)]


def _rle(seg: dict[str, Any] | None) -> dict[str, Any] | None:
    if seg is None:
        return None
    return {"size": [int(v) for v in seg["size"]], "counts": seg["counts"]}


def _entries(row: dict[str, Any], include_floating: bool) -> list[dict[str, Any]]:
    return list(row.get("objects") or []) + (list(row.get("floating_objects") or []) if include_floating else [])


def mask_areas(masks: list[dict[str, Any]], height: int, width: int, where: str) -> tuple[list[int], list[str]]:
    """``(areas, problems)`` of masks that must decode to ``height×width`` with a non-zero area.

    Each distinct mask is checked once (an object's mask repeats across its referring expressions).
    """
    if not masks:
        return [], []
    index: dict[tuple[Any, Any], int] = {}
    unique: list[dict[str, Any]] = []
    positions = []
    for m in masks:
        key = (tuple(m.get("size") or ()), m.get("counts")) if isinstance(m, dict) else (id(m), None)
        if key not in index:
            index[key] = len(unique)
            unique.append(m)
        positions.append(index[key])
    try:
        areas = rle.validate_many(unique, height, width)
    except rle.RLEError as exc:
        bad = getattr(exc, "index", None)
        at = "" if bad is None else f"[{positions.index(bad)}]"
        return [], [f"{where}{at}: {exc}"]
    return [int(areas[i]) for i in positions], []


def mask_problems(masks: list[dict[str, Any]], height: int, width: int, where: str) -> list[str]:
    """Problems of masks that must decode to ``height×width`` with a non-zero area (empty list: all fine)."""
    return mask_areas(masks, height, width, where)[1]


def union_mask(masks: list[dict[str, Any]]) -> dict[str, Any]:
    """One RLE covering every mask of ``masks`` (all of one size)."""
    if len(masks) == 1:
        return _rle(masks[0])
    stack = rle.decode(masks)
    return rle.encode(np.logical_or.reduce(stack, axis=0))


# -- grandf (GranD-f GCG list) ------------------------------------------------------------------------


def grandf_json(caption: str, file_name: str, groundings: list[dict[str, Any]]) -> dict[str, Any]:
    """The GranD-f JSON form: ``{file_name, caption, groundings: {phrase: {token_positives, rle_masks}}}``."""
    return {
        "file_name": file_name,
        "caption": caption,
        "groundings": {
            g["phrase"]: {
                "token_positives": [int(v) for v in g["token_positives"]],
                "rle_masks": [_rle(m) for m in g["rle_masks"]],
            }
            for g in groundings
        },
    }


def check_gcg(record: dict[str, Any], height: int, width: int) -> list[str]:
    """Problems of a GranD-f JSON record: spans select their phrase exactly, masks decode, order by start."""
    problems: list[str] = []
    caption = record.get("caption")
    groundings = record.get("groundings") or {}
    if not isinstance(caption, str) or not caption:
        return ["caption is empty"]
    if not groundings:
        problems.append("no grounded phrase")
    last = -1
    for phrase, g in groundings.items():
        start, end = g["token_positives"]
        if not 0 <= start < end <= len(caption):
            problems.append(f"{phrase!r}: span [{start}, {end}) is outside the caption (length {len(caption)})")
        elif caption[start:end] != phrase:
            problems.append(f"{phrase!r}: span [{start}, {end}) selects {caption[start:end]!r}")
        if start < last:
            problems.append(f"{phrase!r}: not ordered by start offset")
        last = start
        if not g["rle_masks"]:
            problems.append(f"{phrase!r}: no mask")
        problems += mask_problems(g["rle_masks"], height, width, f"{phrase!r}.rle_masks")
    return problems


# -- grand (released per-image layout, spec §8) --------------------------------------------------------


def _grand_object(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": int(obj["id"]),
        "bbox": _box(obj.get("bbox")),
        "labels": list(obj.get("labels") or []),
    }
    if obj.get("label") is not None:
        out["label"] = obj["label"]
    if obj.get("score") is not None:
        out["score"] = _num(obj["score"], 4)
    out["attributes"] = list(obj.get("attributes") or [])
    if obj.get("depth") is not None and _num(obj["depth"], 4) is not None:
        out["depth"] = _num(obj["depth"], 4)
    if obj.get("segmentation") is not None:
        out["segmentation"] = _rle(obj["segmentation"])
        source = obj.get("segmentation_source")
        out["segmentation_source"] = SEGMENTATION_SOURCE_NAMES.get(source, source)
    return out


def grand_record(row: dict[str, Any]) -> dict[str, Any]:
    """The released GranD per-image payload (spec §8) of one ``level3``/``level4`` row.

    Differences from the reference are its fixes: detail ``id`` and ``bbox`` refer to the same object,
    ``tokens_positive`` indexes the stored caption, floating objects carry their masks.
    """
    objects = list(row.get("objects") or [])
    floating = list(row.get("floating_objects") or [])
    boxes = {int(o["id"]): _box(o.get("bbox")) for o in objects + floating}
    landmark = row.get("landmark")
    dense = row.get("dense_caption")
    all_ids = [int(o["id"]) for o in objects + floating]
    out: dict[str, Any] = {
        "objects": [_grand_object(o) for o in objects],
        "floating_objects": [_grand_object(o) for o in floating],
        "floating_attributes": [_floating_attribute(fa) for fa in row.get("floating_attributes") or []],
        "landmark": (
            {"category": landmark.get("category") or "", "fine_category": landmark.get("fine_category") or ""}
            if landmark
            else ""
        ),
        "affordances": {
            a["category"]: {
                "description": a.get("description"),
                "object_ids": [int(i) for i in a.get("object_ids") or []],
                "labels": list(a.get("labels") or []),
            }
            for a in row.get("affordances") or []
        },
        "id_counter": max(all_ids) + 1 if all_ids else 0,
        "relationships": _relationships(row.get("relationships") or [], {int(o["id"]) for o in objects}),
        "short_captions": [
            {"caption": s.get("caption"), "details": [_short_detail(d, boxes) for d in s.get("details") or []]}
            for s in row.get("short_captions") or []
        ],
    }
    if dense is not None:
        out["dense_caption"] = {
            "caption": dense.get("caption"),
            "details": [_dense_detail(d, boxes) for d in dense.get("details") or []],
        }
    if "additional_context" in row:
        out["additional_context"] = row.get("additional_context") or ""
    return out


def _floating_attribute(fa: dict[str, Any]) -> dict[str, Any]:
    return {
        "bbox": _box(fa.get("bbox")),
        "labels": [],
        "score": _num(fa.get("score"), 4),
        "attributes": list(fa.get("attributes") or []),
    }


def _relationships(relationships: list[dict[str, Any]], object_ids: set[int]) -> dict[str, Any]:
    """The released ``relationships``: the grounded phrases and which of their ids are objects / floating."""
    rel_objects: set[int] = set()
    rel_floating: set[int] = set()
    grounding = []
    for rel in relationships:
        ids = [int(i) for i in rel.get("object_ids") or []]
        grounding.append({"phrase": rel.get("phrase"), "object_ids": ids})
        for i in ids:
            (rel_objects if i in object_ids else rel_floating).add(i)
    return {"object_ids": sorted(rel_objects), "floating_object_ids": sorted(rel_floating), "grounding": grounding}


def _short_detail(det: dict[str, Any], boxes: dict[int, list[float] | None]) -> dict[str, Any]:
    """A short-caption detail: its first object's ``id`` and that object's ``bbox``."""
    ids = [int(i) for i in det.get("ids") or []]
    det_boxes = det.get("bbox")
    box = _box(det_boxes[0]) if det_boxes else (boxes.get(ids[0]) if ids else None)
    return {
        "phrase": det.get("phrase"),
        "tokens_positive": None if det.get("tokens_positive") is None else list(det["tokens_positive"]),
        "id": ids[0] if ids else None,
        "bbox": box,
    }


def _dense_detail(det: dict[str, Any], boxes: dict[int, list[float] | None]) -> dict[str, Any]:
    """A dense-caption detail: all its ``ids`` and their boxes."""
    ids = [int(i) for i in det.get("ids") or []]
    det_boxes = det.get("bbox")
    return {
        "phrase": det.get("phrase"),
        "tokens_positive": None if det.get("tokens_positive") is None else list(det["tokens_positive"]),
        "ids": ids,
        "bbox": [_box(b) for b in det_boxes] if det_boxes else [boxes.get(i) for i in ids],
    }


def check_grand(row: dict[str, Any], level: int) -> list[str]:
    """The invariants of ``row`` at ``level`` plus: every mask decodes to the image size with a non-zero area."""
    problems = validate_annotation(row, level)
    masks = [o["segmentation"] for o in _entries(row, True) if o.get("segmentation") is not None]
    problems += mask_problems(masks, int(row["height"]), int(row["width"]), "segmentation")
    return problems


# -- coco ---------------------------------------------------------------------------------------------


def category_name(obj: dict[str, Any]) -> str | None:
    """The object's chosen label, else its first candidate label (normalised, spec §12)."""
    if obj.get("label"):
        return obj["label"]
    labels = [x for x in obj.get("labels") or [] if x]
    return labels[0] if labels else None


def coco_objects(row: dict[str, Any], include_floating: bool) -> tuple[list[dict[str, Any]], Counter]:
    """The objects of ``row`` that become COCO annotations, and the count of those left out by reason."""
    kept: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    for obj in _entries(row, include_floating):
        if obj.get("segmentation") is None:
            skipped["object_without_mask"] += 1
        elif category_name(obj) is None:
            skipped["object_without_label"] += 1
        elif obj.get("bbox") is None:
            skipped["object_without_box"] += 1
        else:
            kept.append(obj)
    return kept, skipped


# -- refseg (referring expressions, spec §10) ----------------------------------------------------------


def strip_assistant(text: str) -> str:
    """``text`` without a leaked ``Assistant:`` / ``istant:`` prefix (case-insensitive, optional colon)."""
    return _ASSISTANT_PREFIX.sub("", text, count=1).strip()


def referring_attributes(obj: dict[str, Any]) -> list[str]:
    """The referring expressions of one object (spec §10): one attribute → it; several → those naming one of
    the object's labels, or the first when none does. Attributes empty after prefix stripping are ignored."""
    raw = obj.get("attributes")
    if isinstance(raw, str):
        raw = [raw]
    attrs = [a for a in (strip_assistant(x) for x in raw or [] if isinstance(x, str)) if a]
    if len(attrs) <= 1:
        return attrs
    labels = [str(x).replace("_", " ").lower() for x in obj.get("labels") or [] if x]
    naming = [a for a in attrs if any(label in a.lower() for label in labels)]
    return naming or attrs[:1]


def refseg_entries(row: dict[str, Any], include_floating: bool = False) -> tuple[list[dict[str, Any]], Counter]:
    """``[{attribute, id, bbox, segmentation}]`` of one row; an object without a mask is skipped and counted
    (the reference's KeyError dropped the whole image, §14.48)."""
    entries: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    for obj in _entries(row, include_floating):
        attrs = referring_attributes(obj)
        if not attrs:
            continue
        if obj.get("segmentation") is None:
            skipped["object_without_mask"] += 1
            continue
        for attr in attrs:
            entries.append(
                {
                    "attribute": attr,
                    "id": int(obj["id"]),
                    "bbox": _box(obj.get("bbox")),
                    "segmentation": _rle(obj["segmentation"]),
                }
            )
    return entries, skipped


def check_refseg(entries: list[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    """Ids resolve to objects with the same box, masks decode to the image size."""
    by_id = {int(o["id"]): o for o in _entries(row, True)}
    problems = []
    for e in entries:
        obj = by_id.get(e["id"])
        if obj is None:
            problems.append(f"entry {e['attribute']!r}: id {e['id']} does not resolve")
        elif e["bbox"] != _box(obj.get("bbox")):
            problems.append(f"entry {e['attribute']!r}: bbox differs from object {e['id']}'s")
    problems += mask_problems([e["segmentation"] for e in entries], int(row["height"]), int(row["width"]), "mask")
    return problems


# -- caption grounding (short captions with per-phrase masks, spec §10) -------------------------------


def caption_grounding(row: dict[str, Any]) -> tuple[list[dict[str, Any]], Counter]:
    """``[{caption, details: [{phrase, tokens_positive, id, ids, bbox, segmentation}]}]`` of one row.

    Masks come from objects *and* floating objects (the reference exported null for floating ones, §14.47);
    ``segmentation`` is the union of the phrase's masks; ``id``/``bbox`` are its first object's. Phrases
    without any mask are left out and counted by reason.
    """
    masks = mask_index(row)
    boxes = {int(o["id"]): _box(o.get("bbox")) for o in _entries(row, True)}
    dropped: Counter = Counter()
    out = []
    for short in row.get("short_captions") or []:
        caption = short.get("caption")
        if caption is None:
            continue
        groundings, lost = gcg_groundings(caption, short.get("details"), masks, drop_overlapping=False)
        dropped.update(f"phrase_{d['reason']}" for d in lost)
        details = []
        for g in groundings:
            ids = [int(i) for i in g["object_ids"]]
            details.append(
                {
                    "phrase": g["phrase"],
                    "tokens_positive": list(g["token_positives"]),
                    "id": ids[0],
                    "ids": ids,
                    "bbox": boxes.get(ids[0]),
                    "segmentation": union_mask(g["rle_masks"]),
                }
            )
        out.append({"caption": caption, "details": details})
    return out, dropped


def check_caption_grounding(captions: list[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    """Spans select their phrase exactly, ids resolve, masks decode to the image size."""
    known = {int(o["id"]) for o in _entries(row, True)}
    problems = []
    masks = []
    for c in captions:
        text = c["caption"]
        for d in c["details"]:
            start, end = d["tokens_positive"]
            if not 0 <= start < end <= len(text) or text[start:end] != d["phrase"]:
                problems.append(f"{d['phrase']!r}: span [{start}, {end}) does not select it in {text!r}")
            missing = [i for i in d["ids"] if i not in known]
            if missing:
                problems.append(f"{d['phrase']!r}: ids {missing} do not resolve")
            masks.append(d["segmentation"])
    problems += mask_problems(masks, int(row["height"]), int(row["width"]), "segmentation")
    return problems
