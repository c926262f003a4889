"""Invariant checks for GranD annotation rows (the ``level1`` … ``level4`` tables).

The reference breaks several invariants (spec §8 end, §14.34/35/39/41); here they hold and are checked:

level ≥ 1
  * ``width``/``height`` are positive;
  * ids are unique and contiguous ``0 … len(objects) + len(floating_objects) - 1``, and the ids
    ``< len(objects)`` are exactly the objects' ids;
  * every box (objects, floating objects, floating attributes) has 4 finite values, ``x1 <= x2``,
    ``y1 <= y2`` and lies inside ``[0, width] × [0, height]`` (:mod:`grand_engine.geometry` convention);
  * scores and depths are finite when set;
  * ``labels`` and ``attributes`` are lists, ``qualifiers`` (when set) is aligned with ``labels``,
    ``label ∈ labels`` when ``label`` is set;
  * affordances reference existing ids, and their labels are labels of those objects;
  * a mask, when present, has the image's ``[height, width]`` size.
level ≥ 2
  * relationships reference existing ids;
  * caption ``details``: ``tokens_positive`` ``[start, end)`` indexes the stored caption and the span is
    the phrase (case-insensitive), ``ids`` exist, ``bbox`` (when set) is aligned with ``ids`` and equals
    those objects' boxes;
  * every detail names at least one id, and its ``match`` (when set) is one of :data:`MATCH_KINDS`.
level ≥ 3
  * every object (not floating object) has a mask;
  * ``segmentation_source`` (when set) is one of :data:`SEGMENTATION_SOURCES` and comes with a mask;
  * every caption detail has its ``tokens_positive`` span.
level ≥ 4
  * ``additional_context`` (when the row has the column) is non-blank text.

Checks are plain functions registered with :func:`register_check` and a minimum level, so a later
level adds its own without touching the others. A check yields human-readable problem strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

DEFAULT_TOLERANCE = 1e-3
"""Slack in pixels for the boxes-inside-the-image and detail-box-equals-object-box checks."""

MATCH_KINDS = ("exact", "lemma", "embedding", "noun")
"""How a caption detail was grounded (``ground_captions`` passes, spec §6)."""

SEGMENTATION_SOURCES = ("sa1b", "detector", "sam", "ovss")
"""Where an object's mask came from (``masks``, spec §7)."""


class InvariantError(ValueError):
    """Raised by :func:`assert_valid`; ``problems`` maps image ids to their broken invariants."""

    def __init__(self, message: str, problems: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass
class AnnotationView:
    """What every check sees: the row plus pre-computed lookups."""

    row: dict[str, Any]
    level: int
    tolerance: float
    width: float | None
    height: float | None
    objects: list[dict[str, Any]]
    floating: list[dict[str, Any]]
    by_id: dict[int, dict[str, Any]] = field(default_factory=dict)
    _entries: list[tuple[str, dict[str, Any]]] | None = field(default=None, repr=False)

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """``(where, object)`` for every object then every floating object (built once per row: every check
        walks them)."""
        if self._entries is None:
            self._entries = [(f"objects[{i}]", obj) for i, obj in enumerate(self.objects)] + [
                (f"floating_objects[{i}]", obj) for i, obj in enumerate(self.floating)
            ]
        return self._entries


Check = Callable[[AnnotationView], Iterable[str]]
_CHECKS: list[tuple[int, str, Check]] = []


def register_check(min_level: int, name: str | None = None) -> Callable[[Check], Check]:
    """Decorator: run ``fn(view) -> problems`` on every row validated at ``level >= min_level``."""

    def decorate(fn: Check) -> Check:
        _CHECKS.append((min_level, name or fn.__name__.lstrip("_"), fn))
        return fn

    return decorate


def registered_checks() -> list[tuple[int, str]]:
    """``(min_level, name)`` of every registered check, in run order."""
    return [(level, name) for level, name, _ in _CHECKS]


# -- helpers --------------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    kind = type(value)
    if kind is float:  # the common case first: x - x is 0 for every finite float, NaN for NaN and inf
        return value - value == 0.0
    if kind is int:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _box_problems(box: Any, view: AnnotationView, where: str) -> list[str]:
    if box is None:
        return [f"{where}: bbox is null"]
    values = list(box)
    if len(values) != 4:
        return [f"{where}: bbox has {len(values)} values, expected 4"]
    x1, y1, x2, y2 = values
    if not (_finite(x1) and _finite(y1) and _finite(x2) and _finite(y2)):
        return [f"{where}: bbox {values} has a NaN/inf/null coordinate"]
    out = []
    if x1 > x2 or y1 > y2:
        out.append(f"{where}: bbox {values} is inverted (need x1 <= x2 and y1 <= y2)")
    tol, width, height = view.tolerance, view.width, view.height
    if width is not None and height is not None:
        if not (-tol <= x1 <= width + tol and x2 <= width + tol and -tol <= y1 <= height + tol and y2 <= height + tol):
            out.append(f"{where}: bbox {values} is outside the {width:g}x{height:g} image")
    return out


def _number_problem(value: Any, where: str, name: str) -> list[str]:
    if value is not None and not _finite(value):
        return [f"{where}: {name} is {value!r}, not a finite number"]
    return []


def _id_set(view: AnnotationView) -> set[int]:
    return set(view.by_id)


# -- level 1 --------------------------------------------------------------------------------------


@register_check(1)
def _image_size(view: AnnotationView) -> Iterable[str]:
    for key in ("width", "height"):
        value = view.row.get(key)
        if not _finite(value) or value <= 0:
            yield f"{key} is {value!r}, expected a positive number"


@register_check(1)
def _ids(view: AnnotationView) -> Iterable[str]:
    n_obj = len(view.objects)
    seen: dict[int, str] = {}
    for k, (where, obj) in enumerate(view.entries()):
        oid = obj.get("id")
        if not isinstance(oid, int) or isinstance(oid, bool):
            yield f"{where}: id is {oid!r}, expected an integer"
            continue
        if oid in seen:
            yield f"{where}: id {oid} is also used by {seen[oid]}"
            continue
        seen[oid] = where
        is_object = k < n_obj  # entries() lists the objects first
        if is_object and not 0 <= oid < n_obj:
            yield f"{where}: object id {oid} is not in 0..{n_obj - 1} (ids < len(objects) must be the objects)"
        if not is_object and not n_obj <= oid < n_obj + len(view.floating):
            yield (
                f"{where}: floating object id {oid} is not in {n_obj}..{n_obj + len(view.floating) - 1} "
                "(floating ids follow the objects)"
            )


@register_check(1)
def _boxes_and_numbers(view: AnnotationView) -> Iterable[str]:
    for where, obj in view.entries():
        yield from _box_problems(obj.get("bbox"), view, where)
        yield from _number_problem(obj.get("score"), where, "score")
        yield from _number_problem(obj.get("depth"), where, "depth")
    for i, attr in enumerate(view.row.get("floating_attributes") or []):
        where = f"floating_attributes[{i}]"
        yield from _box_problems(attr.get("bbox"), view, where)
        yield from _number_problem(attr.get("score"), where, "score")
        if not attr.get("attributes"):
            yield f"{where}: has no attribute text"


@register_check(1)
def _labels(view: AnnotationView) -> Iterable[str]:
    for where, obj in view.entries():
        labels = obj.get("labels")
        if labels is None:
            yield f"{where}: labels is null (use an empty list)"
            labels = []
        elif any(not isinstance(lab, str) for lab in labels):
            yield f"{where}: labels {labels!r} contains a non-string"
        qualifiers = obj.get("qualifiers")
        if qualifiers is not None and len(qualifiers) != len(labels):
            yield f"{where}: {len(qualifiers)} qualifiers for {len(labels)} labels"
        label = obj.get("label")
        if label is not None and label not in labels:
            yield f"{where}: label {label!r} is not one of its labels {labels!r}"
        if obj.get("attributes", []) is None:
            yield f"{where}: attributes is null (use an empty list)"


@register_check(1)
def _affordances(view: AnnotationView) -> Iterable[str]:
    for i, aff in enumerate(view.row.get("affordances") or []):
        where = f"affordances[{i}] ({aff.get('category')!r})"
        ids = aff.get("object_ids") or []
        known_labels: set[str] = set()
        for oid in ids:
            obj = view.by_id.get(oid)
            if obj is None:
                yield f"{where}: object id {oid} does not exist"
            else:
                known_labels.update(obj.get("labels") or [])
                if obj.get("label"):
                    known_labels.add(obj["label"])
        for label in aff.get("labels") or []:
            if label not in known_labels:
                yield f"{where}: label {label!r} is not a label of its objects {sorted(ids)}"


@register_check(1)
def _mask_sizes(view: AnnotationView) -> Iterable[str]:
    if view.width is None or view.height is None:
        return
    expected = [int(view.height), int(view.width)]
    for where, obj in view.entries():
        seg = obj.get("segmentation")
        if seg is None:
            continue
        size = list(seg.get("size") or [])
        if size != expected:
            yield f"{where}: mask size {size} differs from the image size [height, width] = {expected}"
        if not seg.get("counts"):
            yield f"{where}: mask has empty counts"


# -- level 2 --------------------------------------------------------------------------------------


@register_check(2)
def _relationships(view: AnnotationView) -> Iterable[str]:
    ids = _id_set(view)
    for i, rel in enumerate(view.row.get("relationships") or []):
        for oid in rel.get("object_ids") or []:
            if oid not in ids:
                yield f"relationships[{i}] ({rel.get('phrase')!r}): object id {oid} does not exist"


def _detail_problems(caption: Any, details: Any, view: AnnotationView, where: str) -> Iterator[str]:
    if caption is None:
        if details:
            yield f"{where}: has details but no caption"
        return
    for j, det in enumerate(details or []):
        dwhere = f"{where}.details[{j}]"
        yield from _span_problems(caption, det.get("phrase"), det.get("tokens_positive"), dwhere)
        ids = list(det.get("ids") or [])
        for oid in ids:
            if oid not in view.by_id:
                yield f"{dwhere}: object id {oid} does not exist"
        yield from _detail_box_problems(ids, det.get("bbox"), view, dwhere)


def _span_problems(caption: str, phrase: str | None, span: Any, where: str) -> Iterator[str]:
    """A detail's ``tokens_positive`` (when set) is ``[start, end]`` inside the caption and selects its phrase."""
    if span is None:
        return
    span = list(span)
    if len(span) != 2 or not all(isinstance(v, int) for v in span):
        yield f"{where}: tokens_positive {span!r} is not [start, end]"
    elif not 0 <= span[0] < span[1] <= len(caption):
        yield f"{where}: tokens_positive {span} is outside the caption (length {len(caption)})"
    elif phrase is not None and caption[span[0] : span[1]].lower() != phrase.lower():
        yield f"{where}: tokens_positive {span} selects {caption[span[0] : span[1]]!r}, not the phrase {phrase!r}"


def _detail_box_problems(ids: list[Any], boxes: Any, view: AnnotationView, where: str) -> Iterator[str]:
    """A detail's boxes (when set) align with its ids and equal those objects' boxes."""
    if boxes is None:
        return
    boxes = list(boxes)
    if len(boxes) != len(ids):
        yield f"{where}: {len(boxes)} boxes for {len(ids)} ids"
        return
    for oid, box in zip(ids, boxes, strict=True):
        obj = view.by_id.get(oid)
        if obj is None or obj.get("bbox") is None or box is None:
            continue
        if len(box) != 4 or any(
            not _finite(a) or abs(a - b) > view.tolerance for a, b in zip(box, obj["bbox"], strict=False)
        ):
            yield f"{where}: box {list(box)} differs from object {oid}'s bbox {list(obj['bbox'])}"


@register_check(2)
def _captions(view: AnnotationView) -> Iterable[str]:
    for i, cap in enumerate(view.row.get("short_captions") or []):
        yield from _detail_problems(cap.get("caption"), cap.get("details"), view, f"short_captions[{i}]")
    dense = view.row.get("dense_caption")
    if dense is not None:
        yield from _detail_problems(dense.get("caption"), dense.get("details"), view, "dense_caption")


# -- level 3 --------------------------------------------------------------------------------------


@register_check(3)
def _objects_have_masks(view: AnnotationView) -> Iterable[str]:
    for i, obj in enumerate(view.objects):
        if obj.get("segmentation") is None:
            yield f"objects[{i}] (id {obj.get('id')}): has no mask"


@register_check(2)
def _detail_kinds(view: AnnotationView) -> Iterable[str]:
    """Every caption detail names at least one id, and its ``match`` (when set) is a known pass."""
    captions = [(f"short_captions[{i}]", c) for i, c in enumerate(view.row.get("short_captions") or [])]
    if view.row.get("dense_caption") is not None:
        captions.append(("dense_caption", view.row["dense_caption"]))
    for where, cap in captions:
        for j, det in enumerate(cap.get("details") or []):
            if not det.get("ids"):
                yield f"{where}.details[{j}] ({det.get('phrase')!r}): grounded to no id"
            match = det.get("match")
            if match is not None and match not in MATCH_KINDS:
                yield f"{where}.details[{j}]: match {match!r} is not one of {list(MATCH_KINDS)}"


@register_check(3)
def _segmentation_sources(view: AnnotationView) -> Iterable[str]:
    """A mask source, when set, is a known one and comes with a mask."""
    for where, obj in view.entries():
        source = obj.get("segmentation_source")
        if source is None:
            continue
        if source not in SEGMENTATION_SOURCES:
            yield f"{where}: segmentation_source {source!r} is not one of {list(SEGMENTATION_SOURCES)}"
        if obj.get("segmentation") is None:
            yield f"{where}: segmentation_source is {source!r} but it has no mask"


@register_check(3)
def _details_have_spans(view: AnnotationView) -> Iterable[str]:
    """From level 3 on every caption detail has its ``tokens_positive`` span (the reference left some null)."""
    captions = [(f"short_captions[{i}]", c) for i, c in enumerate(view.row.get("short_captions") or [])]
    if view.row.get("dense_caption") is not None:
        captions.append(("dense_caption", view.row["dense_caption"]))
    for where, cap in captions:
        for j, det in enumerate(cap.get("details") or []):
            if det.get("tokens_positive") is None:
                yield f"{where}.details[{j}] ({det.get('phrase')!r}): tokens_positive is null"


# -- level 4 --------------------------------------------------------------------------------------


@register_check(4)
def _additional_context(view: AnnotationView) -> Iterable[str]:
    """A level-4 row's ``additional_context`` (when the column is there) is non-blank text."""
    if "additional_context" not in view.row:
        return
    text = view.row["additional_context"]
    if not isinstance(text, str) or not text.strip():
        yield f"additional_context is {text!r}, expected non-blank text"


# -- entry points ---------------------------------------------------------------------------------


def validate_annotation(row: dict[str, Any], level: int, *, tolerance: float = DEFAULT_TOLERANCE) -> list[str]:
    """Every broken invariant of one annotation row at ``level`` (an empty list means valid)."""
    problems: list[str] = []
    objects = row.get("objects")
    floating = row.get("floating_objects")
    if objects is None:
        problems.append("objects is null (use an empty list)")
    if floating is None:
        problems.append("floating_objects is null (use an empty list)")
    objects = [o for o in (objects or []) if isinstance(o, dict)]
    floating = [o for o in (floating or []) if isinstance(o, dict)]
    width, height = row.get("width"), row.get("height")
    view = AnnotationView(
        row=row,
        level=level,
        tolerance=tolerance,
        width=float(width) if _finite(width) else None,
        height=float(height) if _finite(height) else None,
        objects=objects,
        floating=floating,
    )
    for _, obj in view.entries():
        oid = obj.get("id")
        if isinstance(oid, int) and oid not in view.by_id:
            view.by_id[oid] = obj
    for min_level, name, check in _CHECKS:
        if level < min_level:
            continue
        try:
            problems.extend(check(view))
        except Exception as exc:  # noqa: BLE001 - a malformed row must report, not crash the validator
            problems.append(f"check {name!r} could not run on this row: {type(exc).__name__}: {exc}")
    return problems


def validate_table(
    table: pa.Table | Iterable[dict[str, Any]], level: int, *, tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, list[str]]:
    """``{image_id: problems}`` for every invalid row of ``table`` (an empty dict means all valid)."""
    rows = table.to_pylist() if isinstance(table, pa.Table) else table
    out: dict[str, list[str]] = {}
    for i, row in enumerate(rows):
        problems = validate_annotation(row, level, tolerance=tolerance)
        if problems:
            out[str(row.get("image_id", f"<row {i}>"))] = problems
    return out


def assert_valid(
    table: pa.Table | Iterable[dict[str, Any]],
    level: int,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_reported: int = 20,
) -> None:
    """Raise :class:`InvariantError` naming each bad image and its broken invariants; return if all valid."""
    problems = validate_table(table, level, tolerance=tolerance)
    if not problems:
        return
    lines = []
    for image_id, image_problems in problems.items():
        for problem in image_problems:
            lines.append(f"image {image_id!r}: {problem}")
    shown = lines[:max_reported]
    more = f"\n… and {len(lines) - len(shown)} more" if len(lines) > len(shown) else ""
    raise InvariantError(
        f"{len(problems)} image(s) break level-{level} invariants:\n" + "\n".join(shown) + more, problems
    )
