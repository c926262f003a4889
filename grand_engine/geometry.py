"""Box geometry: the one place where box IoU is computed, in either of the two conventions the reference used.

Conventions:

* A box is ``[x1, y1, x2, y2]`` in absolute pixels of the displayed image, with ``x1 <= x2`` and
  ``y1 <= y2`` (:data:`grand_engine.schema.BOX`).
* **continuous** (the project's convention, and the default everywhere): a box covers the real interval
  ``[x1, x2] × [y1, y2]``, so its area is ``(x2 - x1) * (y2 - y1)`` with **no +1** on widths or heights. A box
  ``[0, 0, 10, 10]`` has area 100 and ``[0, 0, W, H]`` covers a whole ``W × H`` image. The reference used it
  for its per-model self-NMS (step 10a).
* **pixel** (``"pixel"``): the reference's pixel-inclusive IoU, **+1 on every width and height**
  (``(x2 - x1 + 1) * (y2 - y1 + 1)``, intersection sides ``min - max + 1``), used by its cross-model voting
  (step 10b), phrase linking (step 14b) and mask matching (step 21). Stages that reproduce those matches take
  an ``iou_convention`` parameter; the ``grand`` manifest sets ``pixel`` there. The arithmetic follows the
  reference's order of operations, so IoUs compare equal to its values, bit for bit, at the thresholds.
* ``IoU = intersection / union`` with the union floored at :data:`UNION_EPS` (the reference's floor), so two
  degenerate (zero-area) boxes have IoU 0, never NaN. Inverted sides count as 0.

For boxes Dice is a monotone function of IoU (``Dice = 2·IoU / (1 + IoU)`` in either convention), so the
project only ever thresholds IoU (§0.3).

The vectorised functions accept anything ``numpy.asarray`` understands (lists, float32 Arrow-derived arrays)
and compute in float64; :func:`iou`, :func:`iou_pairs` and :func:`nms` work on plain Python floats below
:data:`SMALL_INPUT` boxes, where NumPy's per-call overhead costs more than the arithmetic, with the same
arithmetic and the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import inf

import numpy as np

UNION_EPS = 1e-5
"""Floor of the IoU denominator (§0.3, continuous IoU)."""

IOU_CONVENTIONS: tuple[str, ...] = ("continuous", "pixel")
"""The accepted values of every ``iou_convention`` parameter."""

CANDIDATE_BLOCK = 1 << 18
"""Candidate pairs :func:`iou_pairs` tests at a time (a few MB of arrays)."""

SMALL_INPUT = 64
"""Below this many boxes :func:`iou_pairs` and :func:`nms` run in plain Python, where NumPy's per-call overhead
costs more than the arithmetic (measured with 20-200 px boxes on a 1500×1000 image: plain Python is faster up to
~70 boxes for pairs at IoU >= 0.65 and ~130 for NMS at 0.9). The results are the same either way."""


def check_iou_convention(value: object, owner: str) -> str:
    """``value`` when it names an IoU convention, else a ``ValueError`` naming ``owner`` and the choices."""
    if value not in IOU_CONVENTIONS:
        raise ValueError(f"{owner}: iou_convention must be one of {', '.join(IOU_CONVENTIONS)}; got {value!r}")
    return str(value)


def _plus(convention: str) -> float:
    """What each width and height gains: 0 (continuous) or 1 (pixel-inclusive)."""
    if convention == "continuous":
        return 0.0
    if convention == "pixel":
        return 1.0
    raise ValueError(f"unknown IoU convention {convention!r}; expected one of {', '.join(IOU_CONVENTIONS)}")


def as_boxes(boxes: object) -> np.ndarray:
    """``boxes`` as an ``(N, 4)`` float64 array (an empty input gives shape ``(0, 4)``)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"expected boxes of shape (N, 4), got {arr.shape}")
    return arr


def box_area(boxes: object, convention: str = "continuous") -> np.ndarray | float:
    """Area of one box (a float) or of ``(N, 4)`` boxes (an ``(N,)`` array); inverted sides count as 0."""
    plus = _plus(convention)
    arr = np.asarray(boxes, dtype=np.float64)
    single = arr.ndim == 1
    arr = as_boxes(arr)
    w = arr[:, 2] - arr[:, 0]
    h = arr[:, 3] - arr[:, 1]
    if plus:
        w += plus
        h += plus
    area = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
    return float(area[0]) if single else area


def iou_matrix(a: object, b: object, convention: str = "continuous") -> np.ndarray:
    """Pairwise IoU of ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` as an ``(N, M)`` float64 matrix."""
    plus = _plus(convention)
    a = as_boxes(a)
    b = as_boxes(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    area_a = box_area(a, convention)
    area_b = box_area(b, convention)
    iw = np.minimum(a[:, None, 2], b[None, :, 2])
    iw -= np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3])
    ih -= np.maximum(a[:, None, 1], b[None, :, 1])
    if plus:
        iw += plus
        ih += plus
    np.clip(iw, 0.0, None, out=iw)
    np.clip(ih, 0.0, None, out=ih)
    inter = iw
    inter *= ih
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    np.maximum(union, UNION_EPS, out=union)
    inter /= union
    return inter


def paired_iou(a: object, b: object, convention: str = "continuous") -> np.ndarray:
    """IoU of ``a[k]`` with ``b[k]`` for every ``k`` (two ``(N, 4)`` arrays), as an ``(N,)`` array.

    The arithmetic is :func:`iou_matrix`'s, element for element, so a pair gets the same value either way.
    """
    plus = _plus(convention)
    a = as_boxes(a)
    b = as_boxes(b)
    if len(a) != len(b):
        raise ValueError(f"paired_iou: {len(a)} boxes against {len(b)}")
    iw = np.minimum(a[:, 2], b[:, 2])
    iw -= np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 3], b[:, 3])
    ih -= np.maximum(a[:, 1], b[:, 1])
    if plus:
        iw += plus
        ih += plus
    np.clip(iw, 0.0, None, out=iw)
    np.clip(ih, 0.0, None, out=ih)
    inter = iw * ih
    union = box_area(a, convention) + box_area(b, convention)
    union -= inter
    np.maximum(union, UNION_EPS, out=union)
    return inter / union


def continuous_equivalent(boxes: object, convention: str) -> np.ndarray:
    """``(N, 4)`` boxes whose continuous IoU is the IoU of ``boxes`` in ``convention``: the boxes themselves, or
    for ``pixel`` the boxes grown by 1 to the right and bottom. For pruning searches that reason about continuous
    widths and offsets; compute the IoU itself with :func:`iou_matrix` or :func:`paired_iou` (the reference's
    arithmetic, which growing the boxes first would round differently)."""
    plus = _plus(convention)
    arr = as_boxes(boxes)
    if not plus:
        return arr
    grown = arr.copy()
    grown[:, 2:] += plus
    return grown


def _iou_py(a: Sequence[float], b: Sequence[float], plus: float) -> float:
    """IoU of two boxes in plain Python floats, with :func:`iou_matrix`'s arithmetic (``plus`` = 0 or 1).

    Conditional expressions stand for ``min``/``max``/``clip`` (the same values for finite inputs, a NaN kept like
    NumPy keeps it in the clips); they cost a third of the builtin calls, and this runs once per candidate pair.
    """
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw = (ax2 if ax2 < bx2 else bx2) - (ax1 if ax1 > bx1 else bx1)
    ih = (ay2 if ay2 < by2 else by2) - (ay1 if ay1 > by1 else by1)
    wa, ha, wb, hb = ax2 - ax1, ay2 - ay1, bx2 - bx1, by2 - by1
    if plus:
        iw += plus
        ih += plus
        wa += plus
        ha += plus
        wb += plus
        hb += plus
    inter = (0.0 if iw < 0.0 else iw) * (0.0 if ih < 0.0 else ih)
    union = (
        (0.0 if wa < 0.0 else wa) * (0.0 if ha < 0.0 else ha)
        + (0.0 if wb < 0.0 else wb) * (0.0 if hb < 0.0 else hb)
        - inter
    )
    return inter / (UNION_EPS if union < UNION_EPS else union)


def iou(a: Sequence[float], b: Sequence[float], convention: str = "continuous") -> float:
    """IoU of two single boxes."""
    return _iou_py([float(v) for v in a], [float(v) for v in b], _plus(convention))


def _pairs_py(
    boxes: list[list[float]], min_iou: float, plus: float, groups: Sequence[int] | None = None
) -> tuple[list[int], list[int], list[float]]:
    """:func:`iou_pairs` for a few boxes, in plain Python: the same window (see there), then the exact IoU."""
    t = min(float(min_iou), 1.0)
    reach = (1.0 - t) / t
    if groups is None:
        order = sorted(range(len(boxes)), key=lambda k: boxes[k][0])
    else:
        order = sorted(range(len(boxes)), key=lambda k: (groups[k], boxes[k][0]))
    found: list[tuple[int, int, float]] = []
    n = len(order)
    for p in range(n):
        a = order[p]
        box_a = boxes[a]
        x1 = box_a[0]
        group = None if groups is None else groups[a]
        # the window may only be too wide, never too narrow: rounding slack as in the vectorised path
        limit = x1 + reach * (max(box_a[2] - x1, 0.0) + plus) + 1e-9 * (1.0 + abs(x1))
        for q in range(p + 1, n):
            b = order[q]
            box_b = boxes[b]
            if box_b[0] > limit or (group is not None and groups[b] != group):
                break
            value = _iou_py(box_a, box_b, plus)
            if value >= min_iou:
                found.append((a, b, value) if a < b else (b, a, value))
    found.sort()
    return [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]


def _rows(boxes: Sequence[Sequence[float]]) -> list[list[float]]:
    rows = [list(map(float, b)) for b in boxes]
    if any(len(r) != 4 for r in rows):
        raise ValueError(f"expected boxes of shape (N, 4), got rows of {sorted({len(r) for r in rows})} values")
    return rows


def _pair_arrays(i: list[int], j: list[int], v: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64), np.asarray(v, dtype=np.float64)


def _group_list(groups: object, n: int) -> list[int] | None:
    if groups is None:
        return None
    out = [int(g) for g in (groups.tolist() if isinstance(groups, np.ndarray) else groups)]
    if len(out) != n:
        raise ValueError(f"{n} boxes but {len(out)} group labels")
    return out


def iou_pair_lists(
    boxes: object, min_iou: float, convention: str = "continuous", groups: object = None
) -> tuple[list[int], list[int], list[float]]:
    """:func:`iou_pairs` as Python lists; below :data:`SMALL_INPUT` boxes (given as a list) NumPy is not touched."""
    if min_iou > 0 and isinstance(boxes, (list, tuple)) and len(boxes) < SMALL_INPUT:
        return _pairs_py(_rows(boxes), min_iou, _plus(convention), _group_list(groups, len(boxes)))
    i, j, v = iou_pairs(boxes, min_iou, convention, groups)
    return i.tolist(), j.tolist(), v.tolist()


def iou_pairs(
    boxes: object, min_iou: float, convention: str = "continuous", groups: object = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of ``boxes`` with ``IoU >= min_iou``, as ``(i, j, iou)`` arrays sorted by ``(i, j)``.

    ``groups`` (one integer per box) restricts the pairs to boxes of the same group, so one call serves many
    images (or many images × detectors) at once.

    For ``min_iou > 0`` this avoids the full ``N × N`` matrix. ``IoU(a, b) >= t`` implies
    ``|x1_a - x1_b| <= (1 - t) · max(w_a, w_b)``, ``min(w) >= t · max(w)`` and the same for heights (the
    intersection is at least ``t`` times each box's area). So boxes are sorted by (group and) ``x1``, each box is
    compared only with the boxes inside its window ``x1 ± (1 - t) / t · w`` (found with ``searchsorted``; groups
    are laid end to end on one axis, each further along than any window reaches), the pairs are pruned with the
    exact conditions above, and the IoU is computed for the survivors only. The cost follows the number of near
    pairs instead of ``N²``; the result equals the dense matrix's. Pixel-inclusive IoU is the continuous IoU of
    the boxes grown by 1 to the right and bottom, so the window and the conditions use those widths and heights
    (``w + 1``); the IoU itself is computed as :func:`iou_matrix` does. Below :data:`SMALL_INPUT` boxes the same
    window is walked in plain Python.
    """
    plus = _plus(convention)
    if min_iou > 0 and isinstance(boxes, (list, tuple)) and len(boxes) < SMALL_INPUT:
        return _pair_arrays(*_pairs_py(_rows(boxes), min_iou, plus, _group_list(groups, len(boxes))))
    boxes = as_boxes(boxes)
    n = len(boxes)
    group = None if groups is None else np.asarray(groups, dtype=np.int64).reshape(-1)
    if group is not None and len(group) != n:
        raise ValueError(f"{n} boxes but {len(group)} group labels")
    if n < 2:
        return _pair_arrays([], [], [])
    if not min_iou > 0:
        m = iou_matrix(boxes, boxes, convention)
        same = np.triu(m >= min_iou, k=1)
        if group is not None:
            same &= group[:, None] == group[None, :]
        i, j = np.nonzero(same)
        return i.astype(np.int64), j.astype(np.int64), m[i, j]
    if n < SMALL_INPUT:
        return _pair_arrays(*_pairs_py(boxes.tolist(), min_iou, plus, None if group is None else group.tolist()))
    empty = _pair_arrays([], [], [])
    t = min(float(min_iou), 1.0)
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) + plus
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None) + plus
    window = (1.0 - t) / t * w
    x1, y1 = np.ascontiguousarray(boxes[:, 0]), np.ascontiguousarray(boxes[:, 1])
    if group is None:
        order = np.argsort(boxes[:, 0], kind="stable")
        xs = boxes[order, 0]
    else:
        order = np.lexsort((boxes[:, 0], group))
        x0 = boxes[:, 0].min()
        span = (boxes[:, 0].max() - x0) + window.max() + 1.0  # a group's keys and windows stay below the next's
        xs = (group[order] - group.min()) * span + (boxes[order, 0] - x0)
    slack = 1e-9 * (1.0 + np.abs(xs))  # rounding margin: the window may only be too wide, never too narrow
    hi = np.searchsorted(xs, xs + window[order] + slack, side="right")
    pos = np.arange(n)
    counts = np.maximum(hi - pos - 1, 0)
    total = int(counts.sum())
    if total == 0:
        return empty
    # The candidates are made and tested a block of positions at a time, at most CANDIDATE_BLOCK pairs each: the
    # arrays stay in cache and a crowded input (thousands of boxes per image, a unit of images) stays in memory.
    ends = np.cumsum(counts)
    cuts = np.unique(np.searchsorted(ends, np.arange(CANDIDATE_BLOCK, total, CANDIDATE_BLOCK), side="left"))
    cuts = cuts[(cuts > 0) & (cuts < n)].tolist()
    found_i, found_j, found_v = [], [], []
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        c = counts[lo:hi]
        block = int(c.sum())
        if block == 0:
            continue
        first = np.repeat(pos[lo:hi], c)
        second = np.arange(block) - np.repeat(np.cumsum(c) - c, c) + first + 1
        a, b = order[first], order[second]
        # exact necessary conditions, then the IoU itself. The window was in x only, so the y offset, the most
        # selective condition, goes first and the others see its survivors only.
        hmax = np.maximum(h[a], h[b])
        keep = np.abs(y1[a] - y1[b]) <= (1.0 - t) * hmax + 1e-9 * (1.0 + hmax + np.abs(y1[a]))
        a, b, hmax = a[keep], b[keep], hmax[keep]
        wmax = np.maximum(w[a], w[b])
        tol = 1e-9 * (1.0 + np.maximum(wmax, hmax))
        keep = np.abs(x1[a] - x1[b]) <= (1.0 - t) * wmax + tol
        keep &= np.minimum(w[a], w[b]) >= t * wmax - tol
        keep &= np.minimum(h[a], h[b]) >= t * hmax - tol
        if group is not None:
            keep &= group[a] == group[b]
        a, b = a[keep], b[keep]
        ious = paired_iou(boxes[a], boxes[b], convention)
        keep = ious >= min_iou
        found_i.append(np.minimum(a, b)[keep])
        found_j.append(np.maximum(a, b)[keep])
        found_v.append(ious[keep])
    if not found_i:
        return empty
    i, j, ious = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_v)
    sort = np.lexsort((j, i))
    return i[sort].astype(np.int64), j[sort].astype(np.int64), ious[sort]


def nms(boxes: object, scores: object, iou_threshold: float, groups: object = None) -> np.ndarray:
    """Greedy class-agnostic non-maximum suppression (continuous IoU, as the reference's self-NMS).

    Boxes are visited by descending score (ties keep input order); a box is kept unless a kept box
    has IoU **strictly greater** than ``iou_threshold`` with it (step 10a). Returns the indices
    of the kept boxes into the input, in visiting order (descending score). Only the overlapping pairs
    are computed (:func:`iou_pairs`), so the cost follows the number of near-duplicates, not ``N²``.
    With ``groups`` (one integer per box) each group is suppressed on its own, as if by separate calls, and
    the result lists the groups in ascending order, each by descending score.
    """
    small = isinstance(boxes, (list, tuple)) and len(boxes) < SMALL_INPUT
    if small:
        score_list = [float(v) for v in scores]
        if len(score_list) != len(boxes):
            raise ValueError(f"nms: {len(boxes)} boxes but {len(score_list)} scores")
        group = _group_list(groups, len(score_list))
        # stable: ties keep input order; a NaN score goes last
        first = [-v if v == v else inf for v in score_list]
        order = sorted(range(len(first)), key=first.__getitem__ if group is None else lambda k: (group[k], first[k]))
        visiting = [boxes[k] for k in order]
        visiting_groups = None if group is None else [group[k] for k in order]
    else:
        boxes = as_boxes(boxes)
        score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(score_arr) != len(boxes):
            raise ValueError(f"nms: {len(boxes)} boxes but {len(score_arr)} scores")
        first_key = np.where(np.isnan(score_arr), inf, -score_arr)
        if groups is None:
            order_arr = np.argsort(first_key, kind="stable")
            visiting_groups = None
        else:
            group_arr = np.asarray(groups, dtype=np.int64).reshape(-1)
            if len(group_arr) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(group_arr)} group labels")
            order_arr = np.lexsort((first_key, group_arr))  # stable
            visiting_groups = group_arr[order_arr]
        order = order_arr.tolist()
        visiting = boxes[order_arr]
    n = len(order)
    if n <= 1:
        return np.asarray(order, dtype=np.int64)
    suppressors: dict[int, list[int]] = {}
    pairs = iou_pair_lists(visiting, iou_threshold, groups=visiting_groups)
    for p, q, value in zip(*pairs, strict=True):  # positions in visiting order, p < q
        if value > iou_threshold:
            suppressors.setdefault(p, []).append(q)
    # Greedy: a box is kept unless a kept box before it suppresses it, so the suppressing positions are visited
    # in order and every other box is kept without a look.
    suppressed = [False] * n
    for p in sorted(suppressors):
        if not suppressed[p]:
            for q in suppressors[p]:
                suppressed[q] = True
    if small:
        return np.asarray([k for k, gone in zip(order, suppressed, strict=True) if not gone], dtype=np.int64)
    return order_arr[~np.asarray(suppressed, dtype=bool)].astype(np.int64)


def order_corners(boxes: object) -> np.ndarray:
    """Boxes with ``x1 <= x2`` and ``y1 <= y2`` (swaps inverted corners)."""
    arr = as_boxes(boxes)
    return np.stack(
        [
            np.minimum(arr[:, 0], arr[:, 2]),
            np.minimum(arr[:, 1], arr[:, 3]),
            np.maximum(arr[:, 0], arr[:, 2]),
            np.maximum(arr[:, 1], arr[:, 3]),
        ],
        axis=1,
    )


def clip_boxes(boxes: object, width: float, height: float) -> np.ndarray:
    """Clip boxes to the image frame ``[0, width] × [0, height]`` (returns a new ``(N, 4)`` array)."""
    arr = as_boxes(boxes).copy()
    np.clip(arr[:, 0::2], 0.0, float(width), out=arr[:, 0::2])
    np.clip(arr[:, 1::2], 0.0, float(height), out=arr[:, 1::2])
    return arr


def box_centers(boxes: object) -> np.ndarray:
    """Centres ``(cx, cy)`` of ``(N, 4)`` boxes as an ``(N, 2)`` array."""
    arr = as_boxes(boxes)
    return np.stack([(arr[:, 0] + arr[:, 2]) / 2.0, (arr[:, 1] + arr[:, 3]) / 2.0], axis=1)


def xywh_to_xyxy(boxes: object) -> np.ndarray:
    """``[x, y, w, h]`` (COCO / SA-1B) boxes to ``[x1, y1, x2, y2]``."""
    arr = as_boxes(boxes).copy()
    arr[:, 2] += arr[:, 0]
    arr[:, 3] += arr[:, 1]
    return arr


def xyxy_to_xywh(boxes: object) -> np.ndarray:
    """``[x1, y1, x2, y2]`` boxes to ``[x, y, w, h]``."""
    arr = as_boxes(boxes).copy()
    arr[:, 2] -= arr[:, 0]
    arr[:, 3] -= arr[:, 1]
    return arr
