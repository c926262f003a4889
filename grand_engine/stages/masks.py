"""``masks``: one mask for every object and floating object (GranD steps 21–22, §7; §14 items 17, 38, 39 fixed).

For each object and floating object of the ``level2`` row (box B), in this order:

1. **Region masks** (step 21.1): among the image's region masks — the SA-1B annotations (``sa1b`` table) and,
   for an image without them, SAM's automatic masks (``sam_masks`` table, same annotation format) — the one
   whose box has the highest IoU with B (first on ties; IoU in ``iou_convention``: ``continuous`` by default,
   ``pixel`` for the reference's +1 on every side, which the ``grand`` manifest sets). When that IoU is
   ``>= match_iou`` its mask is taken and **B is replaced by that mask's box** (clipped to the image). The reference's Dice test is not repeated:
   for boxes it is implied by IoU ≥ 0.65 (spec §0.3). ``segmentation_source`` is the table's entry in
   ``region_tables``: ``sa1b`` for SA-1B annotations, ``sam`` for SAM's automatic masks.
2. **Detector masks** (step 21.2, the reference's EVA-02 masks): the same rule over the boxes of the side tables
   named in ``detector_mask_tables`` (each with ``boxes`` list<BOX> and an aligned ``masks`` list<RLE>; a null
   mask entry is skipped) → ``segmentation_source = "detector"``, B replaced by the detector box. None of the
   current detector slots produces masks, so the list is empty by default.
3. **SAM box prompt** (step 22): every object still without a mask is segmented by the ``sam`` slot with its own
   **xyxy** box as the prompt (the reference read xyxy boxes as XYWH and prompted with enlarged boxes,
   §14.38), single-mask output. The image is encoded once and its boxes go through the decoder at most
   ``max_boxes_per_call`` at a time (the reference pushed all of them through one call, §14.17). B is kept;
   ``segmentation_source = "sam"``.

Both objects and floating objects get masks (the reference computed floating-object masks too, and its
exporter then dropped them, §14.47). Two objects may take the same region mask, as in the reference.

Output: ``masks`` — one entry per object then floating object (``level2`` order) with ``object_id``, ``bbox``
(the box after the update), ``segmentation`` (COCO RLE of the image's size), ``segmentation_source`` and
``match_iou`` (the IoU of B with the matched mask's box; null for SAM prompts). ``level3`` applies them to the
objects and to the grounding details' boxes together (the reference left the detail boxes stale, §14.39).

Bad input is an error row naming it: an object without a usable box, a mask whose size is not the image's,
a detector table whose ``boxes`` and ``masks`` differ in length, or objects needing SAM with no ``sam`` slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grand_engine.geometry import (
    check_iou_convention,
    clip_boxes,
    continuous_equivalent,
    iou_matrix,
    order_corners,
    paired_iou,
)
from grand_engine.runtime.stage import Resources, Stage, UnitInput, collaborator
from grand_engine.schema import BOX, RLE, table_schema
from grand_engine.validate import SEGMENTATION_SOURCES

__all__ = ["MASK", "MASKS_SCHEMA", "MaskPool", "Masks", "assign_masks"]

MASK = pa.struct(
    [
        ("object_id", pa.int32()),
        ("bbox", BOX),  # the object's box after the update (the matched mask's box, or its own box for SAM)
        ("segmentation", RLE),
        ("segmentation_source", pa.string()),  # sa1b | detector | sam
        ("match_iou", pa.float32()),  # IoU of the object's box with the matched mask's box; null for SAM prompts
    ]
)

MASKS_SCHEMA = table_schema(("masks", pa.list_(MASK)))
"""The ``masks`` table."""


@dataclass
class MaskPool:
    """Candidate masks of one kind for one image: ``(N, 4)`` xyxy boxes, their RLEs and their source names."""

    boxes: np.ndarray
    rles: list[dict[str, Any]]
    sources: list[str]

    @classmethod
    def empty(cls) -> MaskPool:
        return cls(np.zeros((0, 4), dtype=np.float64), [], [])

    def add(self, boxes: list[Any], rles: list[Any], source: str, where: str, size: list[int]) -> None:
        """Append the entries with a usable box and mask; a mask of another size raises ``ValueError``."""
        keep_boxes = []
        for i, (box, seg) in enumerate(zip(boxes, rles, strict=True)):
            if box is None or seg is None:
                continue
            values = [float(v) if v is not None else math.nan for v in box]
            if len(values) != 4 or not all(math.isfinite(v) for v in values):
                continue
            if list(seg.get("size") or []) != size or not seg.get("counts"):
                raise ValueError(
                    f"{where}[{i}]: mask size {list(seg.get('size') or [])} is not the image's [height, width] {size}"
                )
            keep_boxes.append(values)
            self.rles.append({"size": [int(size[0]), int(size[1])], "counts": seg["counts"]})
            self.sources.append(source)
        if keep_boxes:
            self.boxes = np.concatenate([self.boxes, order_corners(np.asarray(keep_boxes, dtype=np.float64))])

    def add_annotations(self, anns: pa.StructArray, source: str, where: str, size: list[int]) -> None:
        """:meth:`add` for one image's annotations as an Arrow struct array (fields ``bbox`` and ``segmentation``),
        read column by column: no Python object is made per annotation except the kept masks' RLE dicts."""
        n = len(anns)
        if n == 0:
            return
        fields = dict(zip([f.name for f in anns.type], anns.flatten(), strict=True))  # parent nulls applied
        box_arr, seg_arr = fields["bbox"], fields["segmentation"]
        box_ok = np.asarray(box_arr.is_valid())
        seg_ok = np.asarray(seg_arr.is_valid())
        boxes = np.full((n, 4), np.nan)
        if box_ok.any():
            boxes[box_ok] = np.asarray(box_arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(
                -1, 4
            )
        usable = box_ok & seg_ok & np.isfinite(boxes).all(axis=1)
        size_arr, counts_arr = seg_arr.flatten()
        sizes = np.full((n, 2), -1, dtype=np.int64)
        size_ok = np.asarray(size_arr.is_valid())
        if size_ok.any():
            flat = size_arr.flatten().to_numpy(zero_copy_only=False)
            sizes[size_ok] = np.nan_to_num(np.asarray(flat, dtype=np.float64), nan=-1).astype(np.int64).reshape(-1, 2)
        lengths = np.asarray(pc.fill_null(pc.binary_length(counts_arr), 0).to_numpy(zero_copy_only=False))
        bad = usable & (((sizes[:, 0] != size[0]) | (sizes[:, 1] != size[1])) | (lengths == 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{where}[{i}]: mask size {size_arr[i].as_py() or []} is not the image's [height, width] {size}"
            )
        if not usable.any():
            return
        h, w = int(size[0]), int(size[1])
        counts = counts_arr.filter(pa.array(usable)).to_pylist()
        self.rles.extend({"size": [h, w], "counts": c} for c in counts)
        self.sources.extend([source] * len(counts))
        self.boxes = np.concatenate([self.boxes, order_corners(boxes[usable])])

    def best(
        self, boxes: np.ndarray, threshold: float, convention: str = "continuous"
    ) -> list[tuple[int, float] | None]:
        """For each box: ``(index, IoU)`` of the best-overlapping pool entry when IoU (in ``convention``)
        ``>= threshold``.

        The best entry is the one of highest IoU, the first on ties. For ``threshold > 0`` only the pairs
        that can reach it are computed (:func:`_pairs_above`); the result equals the dense matrix's.
        """
        if len(self.rles) == 0 or len(boxes) == 0:
            return [None] * len(boxes)
        if not threshold > 0:
            ious = iou_matrix(boxes, self.boxes, convention)
            j = np.argmax(ious, axis=1)  # first on ties
            i = np.arange(len(boxes))
            return [(int(b), float(v)) if v >= threshold else None for b, v in zip(j, ious[i, j], strict=True)]
        i, j, ious = _pairs_above(np.asarray(boxes, dtype=np.float64), self.boxes, threshold, convention)
        out: list[tuple[int, float] | None] = [None] * len(boxes)
        if len(i):
            order = np.lexsort((j, -ious, i))  # per box: highest IoU first, then the first pool entry
            i, j, ious = i[order], j[order], ious[order]
            first = np.flatnonzero(np.concatenate(([True], i[1:] != i[:-1])))
            for a, b, v in zip(i[first].tolist(), j[first].tolist(), ious[first].tolist(), strict=True):
                out[a] = (b, v)
        return out


def _pairs_above(
    a: np.ndarray, b: np.ndarray, threshold: float, convention: str = "continuous"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(i, j)`` of ``a[i]`` and ``b[j]`` with IoU ``>= threshold > 0``, as ``(i, j, iou)`` arrays.

    IoU ``>= t`` means the intersection holds at least ``t`` of each box, which implies ``t·w_a <= w_b <= w_a/t``
    (heights alike), ``|x1_a - x1_b| <= (1 - t)/t · w_a`` and ``|y1_a - y1_b| <= (1 - t)/t · h_a``. So ``b`` is
    indexed by width class (widths within a factor ``1/t``), horizontal strip of ``y1`` and ``x1``, in one sorted
    key; each ``a`` looks up the classes and strips its bounds touch and, in each, its ``x1`` window
    (``searchsorted``). The work follows the boxes near each box, not ``len(a) × len(b)``. Candidates then pass the
    cheap conditions above and their IoU is computed by :func:`grand_engine.geometry.paired_iou`, as
    :func:`grand_engine.geometry.iou_matrix` does, so pairs and values equal the dense matrix's. Every bound is
    widened by a rounding margin: a window may only be too wide, never too narrow. For the pixel convention the
    search runs on the boxes grown by 1 to the right and bottom, whose continuous IoU is the pixel IoU
    (:func:`grand_engine.geometry.continuous_equivalent`).
    """
    given_a, given_b = a, b
    a, b = continuous_equivalent(a, convention), continuous_equivalent(b, convention)
    t = min(float(threshold), 1.0)
    wb = np.clip(b[:, 2] - b[:, 0], 0.0, None)
    hb = np.clip(b[:, 3] - b[:, 1], 0.0, None)
    pool = np.flatnonzero((wb > 0) & (hb > 0))  # a box without area has IoU 0 with everything
    if len(a) == 0 or len(pool) == 0:
        return _no_pairs()
    wa = np.clip(a[:, 2] - a[:, 0], 0.0, None)
    ha = np.clip(a[:, 3] - a[:, 1], 0.0, None)
    rx = (1.0 - t) / t * wa + 1e-6 * (1.0 + np.abs(a[:, 0]) + wa)
    ry = (1.0 - t) / t * ha + 1e-6 * (1.0 + np.abs(a[:, 1]) + ha)
    classes = _width_classes(wb[pool], wa, t)
    strips = _y1_strips(b[pool, 1], a[:, 1], ry)
    sorted_pos, q, lo, counts = _x1_windows(a[:, 0], b[pool, 0], rx, classes, strips)
    if int(counts.sum()) == 0:
        return _no_pairs()
    order = pool[sorted_pos]
    bs = b[order]
    sb = _Columns(*(np.ascontiguousarray(bs[:, col]) for col in range(4)), wb[order], hb[order])
    i, pos = _near_candidates(a, wa, ha, ry, sb, q, lo, counts, t)
    ious = paired_iou(given_a[i], given_b[order[pos]], convention)
    keep = ious >= threshold
    return i[keep].astype(np.int64), order[pos[keep]].astype(np.int64), ious[keep]


def _no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)


class _Bins(NamedTuple):
    """Boxes binned along one axis for :func:`_pairs_above`: the number of bins, each pool box's bin, and each
    query box's range of bins ``[lo, hi]`` (none when ``hi < lo``)."""

    n: int
    of_pool: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


class _Columns(NamedTuple):
    """The sorted pool's boxes as contiguous columns (gathers from them stay cache-friendly), widths, heights."""

    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    w: np.ndarray
    h: np.ndarray


def _width_classes(w_pool: np.ndarray, wa: np.ndarray, t: float) -> _Bins:
    """Width classes with edges ``w_min · (1/t)^k`` (searchsorted makes the class a monotone function of the
    width); a query box of width ``w`` reaches the classes of the widths ``[t·w, w/t]``."""
    w_min, w_max = float(w_pool.min()), float(w_pool.max())
    n_cls = 1 if t >= 1.0 else min(64, int(np.ceil(np.log(w_max / w_min) / -np.log(t))) + 1)
    edges = w_min * (1.0 / t) ** np.arange(n_cls) if t < 1.0 else np.array([w_min])
    cls_b = np.searchsorted(edges, w_pool, side="right") - 1
    c_lo = np.clip(np.searchsorted(edges, t * wa * (1 - 1e-9), side="right") - 1, 0, n_cls)
    c_hi = np.clip(np.searchsorted(edges, wa / t * (1 + 1e-9), side="right") - 1, -1, n_cls - 1)
    return _Bins(n_cls, cls_b, c_lo, c_hi)


def _y1_strips(y1_pool: np.ndarray, y1_query: np.ndarray, ry: np.ndarray) -> _Bins:
    """Horizontal strips of ``y1`` (at most ~257); a query box reaches the strips of ``y1 ± ry``."""
    y0 = float(y1_pool.min())
    strip = max(float(np.median(ry)), (float(y1_pool.max()) - y0) / 256.0, 1e-3)  # at most ~257 strips
    strip_b = np.floor((y1_pool - y0) / strip).astype(np.int64)
    n_str = int(strip_b.max()) + 1
    s_lo = np.clip(np.floor((y1_query - ry - y0) / strip), 0, n_str).astype(np.int64)
    s_hi = np.clip(np.floor((y1_query + ry - y0) / strip), -1, n_str - 1).astype(np.int64)
    return _Bins(n_str, strip_b, s_lo, s_hi)


def _x1_windows(
    x1_query: np.ndarray, x1_pool: np.ndarray, rx: np.ndarray, classes: _Bins, strips: _Bins
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort the pool by one key — its (class, strip) block, then ``x1`` shifted so that every ``x1`` window
    stays inside its block — and look up every (query box, class, strip) that the query's bounds touch.

    Returns the pool's sort order (positions in the pool) and, per lookup, its query box, the first sorted
    position of its ``x1`` window and the window's length.
    """
    x0 = float(min(x1_query.min(), x1_pool.min())) - float(rx.max()) - 1.0
    block = float(max(x1_query.max(), x1_pool.max())) - x0 + float(rx.max()) + 1.0
    keys_b = (classes.of_pool * strips.n + strips.of_pool) * block + (x1_pool - x0)
    order = np.argsort(keys_b, kind="stable")
    keys = keys_b[order]
    nc = np.maximum(classes.hi - classes.lo + 1, 0)
    ns = np.maximum(strips.hi - strips.lo + 1, 0)
    per = nc * ns
    q = np.repeat(np.arange(len(x1_query)), per)
    k = np.arange(len(q)) - np.repeat(np.cumsum(per) - per, per)
    q_block = (classes.lo[q] + k // ns[q]) * strips.n + (strips.lo[q] + k % ns[q])
    centre = q_block * block + (x1_query[q] - x0)
    lo = np.searchsorted(keys, centre - rx[q], side="left")
    hi = np.searchsorted(keys, centre + rx[q], side="right")
    return order, q, lo, np.maximum(hi - lo, 0)


def _near_candidates(
    a: np.ndarray,
    wa: np.ndarray,
    ha: np.ndarray,
    ry: np.ndarray,
    sb: _Columns,
    q: np.ndarray,
    lo: np.ndarray,
    counts: np.ndarray,
    t: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The (query box, sorted pool position) pairs of the windows that pass the cheap necessary conditions: the
    ``y1`` window, the width ratio, the height ratio."""
    total = int(counts.sum())
    pos = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(total)
    i = np.repeat(q, counts)
    near = np.abs(np.repeat(a[q, 1], counts) - sb.y1[pos]) <= np.repeat(ry[q], counts)
    i, pos = i[near], pos[near]
    for sa, sp in ((wa, sb.w), (ha, sb.h)):
        x, y = sa[i], sp[pos]
        longer = np.maximum(x, y)
        near = np.minimum(x, y) >= t * longer - 1e-9 * (1.0 + longer)
        i, pos = i[near], pos[near]
    return i, pos


def _annotation_array(unit: UnitInput, table: str, image_id: str) -> pa.StructArray | None:
    """One image's ``annotations`` of ``table`` as an Arrow struct array (a null list gives an empty one), or
    ``None`` when the table is not there or its annotations lack a ``bbox`` box or a ``segmentation`` RLE (then
    the row path, with its errors, is taken)."""
    tbl = unit.inputs.get(table)
    if tbl is None or "annotations" not in tbl.column_names:
        return None
    kind = tbl.schema.field("annotations").type
    if not pa.types.is_list(kind) or not pa.types.is_struct(kind.value_type):
        return None
    item = kind.value_type
    names = [f.name for f in item]
    if "bbox" not in names or "segmentation" not in names:
        return None
    if item.field("bbox").type != BOX or item.field("segmentation").type != RLE:
        return None
    pos = pc.index(tbl.column("image_id"), image_id).as_py()
    if pos < 0:
        return None
    value = tbl.column("annotations")[pos]
    return value.values if value.is_valid else pa.array([], type=item)


def _object_boxes(entries: list[dict[str, Any]], width: int, height: int) -> np.ndarray:
    boxes = np.zeros((len(entries), 4), dtype=np.float64)
    for i, obj in enumerate(entries):
        box = obj.get("bbox")
        values = [math.nan] * 4 if box is None or len(box) != 4 else [math.nan if v is None else float(v) for v in box]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"object id {obj.get('id')} has no usable bbox ({box!r})")
        boxes[i] = values
    return clip_boxes(order_corners(boxes), width, height) if len(boxes) else boxes


def assign_masks(
    entries: list[dict[str, Any]],
    width: int,
    height: int,
    region: MaskPool,
    detector: MaskPool,
    segment: Any = None,
    *,
    match_iou: float = 0.65,
    iou_convention: str = "continuous",
) -> list[dict[str, Any]]:
    """``MASK`` dicts for ``entries`` (objects then floating objects): region mask, detector mask, else SAM. A stuff
    object from the optional ``ovss`` stage keeps its own mask (``segmentation_source = "ovss"``).

    ``segment(boxes_xyxy) -> list[RLE]`` segments the remaining objects' boxes (called once, only when some
    object needs it); ``None`` makes that case a ``ValueError``.
    """
    boxes = _object_boxes(entries, width, height)
    out: list[dict[str, Any] | None] = [None] * len(entries)
    rest = []
    for i, obj in enumerate(entries):
        if obj.get("segmentation_source") == "ovss" and obj.get("segmentation"):  # a stuff region is its own mask
            out[i] = {
                "object_id": int(obj["id"]),
                "bbox": boxes[i].tolist(),
                "segmentation": obj["segmentation"],
                "segmentation_source": "ovss",
                "match_iou": None,
            }
        else:
            rest.append(i)
    for pool in (region, detector):
        hits = pool.best(boxes[rest], match_iou, iou_convention) if rest else []
        clipped = clip_boxes(pool.boxes, width, height).tolist() if any(h is not None for h in hits) else []
        still = []
        for i, hit in zip(rest, hits, strict=True):
            if hit is None:
                still.append(i)
                continue
            j, iou = hit
            out[i] = {
                "object_id": int(entries[i]["id"]),
                "bbox": clipped[j],
                "segmentation": pool.rles[j],
                "segmentation_source": pool.sources[j],
                "match_iou": iou,
            }
        rest = still
    if rest:
        if segment is None:
            ids = [entries[i].get("id") for i in rest]
            raise ValueError(f"object ids {ids} match no region or detector mask and no `sam` model is configured")
        rles = list(segment(boxes[rest]))
        if len(rles) != len(rest):
            raise RuntimeError(f"SAM returned {len(rles)} masks for {len(rest)} boxes")
        for i, seg in zip(rest, rles, strict=True):
            out[i] = {
                "object_id": int(entries[i]["id"]),
                "bbox": boxes[i].tolist(),
                "segmentation": seg,
                "segmentation_source": "sam",
                "match_iou": None,
            }
    return [m for m in out if m is not None]


@dataclass
class Masks(Stage):
    """A mask for every object and floating object: SA-1B match, detector mask, else SAM with the xyxy box."""

    name: ClassVar[str] = "masks"
    requires: ClassVar[tuple[str, ...]] = ("level2", "sa1b", "sam_masks", "images")
    level: ClassVar[int | None] = 3
    schema: ClassVar[pa.Schema] = MASKS_SCHEMA
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("sam",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=4)

    match_iou: float = 0.65  # spec step 21: region/detector mask taken when box IoU >= 0.65
    # step 21's IoU: "continuous" (no +1, the project's) or "pixel" (the reference's +1; set by the grand manifest)
    iou_convention: str = "continuous"
    max_boxes_per_call: int = 64  # SAM prompts per decoder call (the reference sent all boxes at once, §14.17)
    region_tables: dict[str, str] = field(
        default_factory=lambda: {"sa1b": "sa1b", "sam_masks": "sam"}
    )  # step 21.1: annotation tables (`annotations` column) -> segmentation_source
    detector_mask_tables: list[str] = field(default_factory=list)  # step 21.2: side tables with boxes + masks

    sam: Any = collaborator()  # the SAM adapter (optional `sam` slot); loaded when None and the slot is set

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.match_iou) <= 1.0:
            raise ValueError(f"masks: match_iou must be in [0, 1], got {self.match_iou!r}")
        self.iou_convention = check_iou_convention(self.iou_convention, "masks")
        if int(self.max_boxes_per_call) < 1:
            raise ValueError(f"masks: max_boxes_per_call must be at least 1, got {self.max_boxes_per_call!r}")
        bad = {t: s for t, s in dict(self.region_tables).items() if s not in SEGMENTATION_SOURCES}
        if bad:
            raise ValueError(f"masks: region_tables sources must be among {list(SEGMENTATION_SOURCES)}, got {bad}")

    def inputs(self) -> tuple[str, ...]:
        return ("images", "level2", *self.region_tables, *self.detector_mask_tables)

    def setup(self) -> None:
        if self.sam is None:
            self.sam = self.load_model("sam", required=False)

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        level2 = unit.input_row("level2", image_id)
        width, height = level2.get("width"), level2.get("height")
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise ValueError(f"image {image_id!r} has no valid size (width={width!r}, height={height!r})")
        size = [height, width]
        region = MaskPool.empty()
        for table, source in self.region_tables.items():
            arrow = _annotation_array(unit, table, image_id)
            if arrow is not None:
                region.add_annotations(arrow, source, f"{table}.annotations", size)
                continue
            anns = unit.input_row(table, image_id).get("annotations") or []
            region.add(
                [a.get("bbox") for a in anns],
                [a.get("segmentation") for a in anns],
                source,
                f"{table}.annotations",
                size,
            )
        detector = MaskPool.empty()
        for table in self.detector_mask_tables:
            row = unit.input_row(table, image_id)
            boxes, masks = row.get("boxes") or [], row.get("masks") or []
            if len(boxes) != len(masks):
                raise ValueError(f"{table}: {len(boxes)} boxes but {len(masks)} masks")
            detector.add(boxes, masks, "detector", f"{table}.masks", size)

        entries = [o for o in (level2.get("objects") or []) + (level2.get("floating_objects") or []) if o]

        def segment(boxes: np.ndarray) -> list[dict[str, Any]]:
            image = unit.pixels(image_id)
            if tuple(image.shape[:2]) != (height, width):
                raise ValueError(f"decoded image is {image.shape[1]}x{image.shape[0]}, level2 says {width}x{height}")
            return self.sam.segment_boxes(image, boxes, max_boxes_per_call=int(self.max_boxes_per_call))

        masks = assign_masks(
            entries,
            width,
            height,
            region,
            detector,
            segment if self.sam is not None else None,
            match_iou=float(self.match_iou),
            iou_convention=self.iou_convention,
        )
        return {"image_id": image_id, "masks": masks}
