"""GCG records: exact phrase spans and per-phrase masks of one caption (the rules of the ``grandf`` stage).

Pure functions of plain row dicts, shared by the ``grandf`` stage (:mod:`grand_engine.stages.grandf`, whose
docstring states the rules) and the ``caption-grounding`` export.
"""

from __future__ import annotations

import re
from typing import Any

DROP_REASONS = ("no_span", "unknown_ids", "no_mask", "overlap", "duplicate_phrase")


def find_span(caption: str, phrase: str | None, span: Any) -> tuple[int, int] | None:
    """The ``[start, end)`` of ``phrase`` in ``caption`` (step 2 of the ``grandf`` stage docstring), or ``None``."""
    if span is not None:
        values = list(span)
        if len(values) == 2 and all(isinstance(v, int) for v in values):
            start, end = values
            if 0 <= start < end <= len(caption) and (phrase is None or caption[start:end].lower() == phrase.lower()):
                return start, end
    if not phrase or not phrase.strip():
        return None
    match = re.search(re.escape(phrase), caption, flags=re.IGNORECASE)
    if match is None or match.end() == match.start():
        return None
    return match.start(), match.end()


def mask_index(row: dict[str, Any]) -> dict[int, dict[str, Any] | None]:
    """``{id: mask or None}`` over objects and floating objects; masks of the wrong size count as none."""
    height, width = row.get("height"), row.get("width")
    out: dict[int, dict[str, Any] | None] = {}
    for obj in list(row.get("objects") or []) + list(row.get("floating_objects") or []):
        oid = obj.get("id")
        if oid is None or oid in out:
            continue
        seg = obj.get("segmentation")
        if seg is not None and (
            seg.get("counts") is None
            or seg.get("size") is None
            or (height is not None and width is not None and list(seg["size"]) != [int(height), int(width)])
        ):
            seg = None
        out[int(oid)] = None if seg is None else {"size": [int(v) for v in seg["size"]], "counts": seg["counts"]}
    return out


def gcg_groundings(
    caption: str,
    details: list[dict[str, Any]] | None,
    masks: dict[int, dict[str, Any] | None],
    drop_overlapping: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(groundings, dropped)`` of one caption (steps 2–4 of the ``grandf`` stage docstring)."""
    candidates: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for det in details or []:
        grounding, reason = _grounding(caption, det, masks)
        if grounding is None:
            dropped.append({"phrase": det.get("phrase"), "reason": reason})
        else:
            candidates.append(grounding)
    kept, lost = _order_and_dedupe(candidates, drop_overlapping)
    return kept, dropped + lost


def _grounding(
    caption: str, det: dict[str, Any], masks: dict[int, dict[str, Any] | None]
) -> tuple[dict[str, Any] | None, str]:
    """The grounding of one detail (steps 2–3), or ``None`` and the reason it is dropped."""
    span = find_span(caption, det.get("phrase"), det.get("tokens_positive"))
    if span is None:
        return None, "no_span"
    ids: list[int] = []
    for oid in det.get("ids") or []:
        if oid is not None and int(oid) not in ids:
            ids.append(int(oid))
    known = [oid for oid in ids if oid in masks]
    if not known:
        return None, "unknown_ids"
    with_mask = [oid for oid in known if masks[oid] is not None]
    if not with_mask:
        return None, "no_mask"
    start, end = span
    grounding = {
        "phrase": caption[start:end],
        "token_positives": [start, end],
        "rle_masks": [masks[oid] for oid in with_mask],
        "object_ids": with_mask,
    }
    return grounding, ""


def _order_and_dedupe(
    candidates: list[dict[str, Any]], drop_overlapping: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Step 4: order by start (longer first on a tie), drop overlapping spans and repeated phrase texts."""
    candidates = sorted(candidates, key=lambda g: (g["token_positives"][0], -g["token_positives"][1]))
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    seen: set[str] = set()
    last_end = 0
    for g in candidates:
        start, end = g["token_positives"]
        if drop_overlapping and kept and start < last_end:
            dropped.append({"phrase": g["phrase"], "reason": "overlap"})
            continue
        if g["phrase"] in seen:
            dropped.append({"phrase": g["phrase"], "reason": "duplicate_phrase"})
            continue
        kept.append(g)
        seen.add(g["phrase"])
        last_end = max(last_end, end)
    return kept, dropped


def gcg_record(
    row: dict[str, Any], file_name: str, verified_only: bool = True, drop_overlapping: bool = True
) -> dict[str, Any]:
    """The ``grandf`` row of one level-3/4 annotation row (see the ``grandf`` stage docstring)."""
    masks = mask_index(row)
    dense = row.get("dense_caption") or {}
    caption = dense.get("caption")
    status = (dense.get("verification") or {}).get("status") if caption is not None else None
    groundings: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    skip: str | None = None
    if caption is None or not caption.strip():
        caption, skip = None, "no_dense_caption"
    else:
        groundings, dropped = gcg_groundings(caption, dense.get("details"), masks, drop_overlapping)
        if verified_only and status != "verified":
            skip = f"verification_{status or 'missing'}"
        elif not groundings:
            skip = "no_grounded_phrase"
    shorts = []
    for short in row.get("short_captions") or []:
        text = short.get("caption")
        if text is None:
            continue
        g, d = gcg_groundings(text, short.get("details"), masks, drop_overlapping)
        shorts.append({"caption": text, "groundings": g, "dropped_phrases": d})
    return {
        "image_id": row["image_id"],
        "file_name": file_name,
        "width": row.get("width"),
        "height": row.get("height"),
        "caption": caption,
        "groundings": groundings,
        "dropped_phrases": dropped,
        "verification_status": status,
        "skip_reason": skip,
        "short_captions": shorts,
    }
