"""Box geometry: the one IoU convention of the whole project.

Convention (used by every stage, validator and benchmark):

* A box is ``[x1, y1, x2, y2]`` in absolute pixels of the displayed image, with ``x1 <= x2`` and
  ``y1 <= y2`` (:data:`grand_engine.schema.BOX`).
* Coordinates are **continuous**: a box covers the real interval ``[x1, x2] × [y1, y2]``, so its area
  is ``(x2 - x1) * (y2 - y1)`` with **no +1** on widths or heights. A box ``[0, 0, 10, 10]`` has area
  100 and ``[0, 0, W, H]`` covers a whole ``W × H`` image.
* ``IoU = intersection / union`` with the union floored at :data:`UNION_EPS` (the reference's floor),
  so two degenerate (zero-area) boxes have IoU 0, never NaN.

The reference mixes this convention (its per-model self-NMS) with a pixel-inclusive one (+1 on every
side, used by its voting and mask matching) and a Dice test; for boxes Dice is a monotone function of
IoU (``Dice = 2·IoU / (1 + IoU)``), so the project only ever thresholds IoU (spec §0.3).

All functions accept anything ``numpy.asarray`` understands (lists, float32 Arrow-derived arrays) and
compute in float64.
"""

from __future__ import annotations

import numpy as np

UNION_EPS = 1e-5
"""Floor of the IoU denominator (spec §0.3, continuous IoU)."""


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


def box_area(boxes: object) -> np.ndarray | float:
    """Area of one box (a float) or of ``(N, 4)`` boxes (an ``(N,)`` array); inverted sides count as 0."""
    arr = np.asarray(boxes, dtype=np.float64)
    single = arr.ndim == 1
    arr = as_boxes(arr)
    area = np.clip(arr[:, 2] - arr[:, 0], 0.0, None) * np.clip(arr[:, 3] - arr[:, 1], 0.0, None)
    return float(area[0]) if single else area


def iou_matrix(a: object, b: object) -> np.ndarray:
    """Pairwise IoU of ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` as an ``(N, M)`` float64 matrix."""
    a = as_boxes(a)
    b = as_boxes(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    area_a = box_area(a)
    area_b = box_area(b)
    iw = np.minimum(a[:, None, 2], b[None, :, 2])
    iw -= np.maximum(a[:, None, 0], b[None, :, 0])
    np.clip(iw, 0.0, None, out=iw)
    ih = np.minimum(a[:, None, 3], b[None, :, 3])
    ih -= np.maximum(a[:, None, 1], b[None, :, 1])
    np.clip(ih, 0.0, None, out=ih)
    inter = iw
    inter *= ih
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    np.maximum(union, UNION_EPS, out=union)
    inter /= union
    return inter


def iou(a: object, b: object) -> float:
    """IoU of two single boxes."""
    return float(iou_matrix(a, b)[0, 0])


def iou_pairs(boxes: object, min_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of ``boxes`` with ``IoU >= min_iou``, as ``(i, j, iou)`` arrays sorted by ``(i, j)``.

    For ``min_iou > 0`` this avoids the full ``N × N`` matrix. ``IoU(a, b) >= t`` implies
    ``|x1_a - x1_b| <= (1 - t) · max(w_a, w_b)``, ``min(w) >= t · max(w)`` and the same for heights (the
    intersection is at least ``t`` times each box's area). So boxes are sorted by ``x1``, each box is
    compared only with the boxes inside its window ``x1 ± (1 - t) / t · w`` (found with ``searchsorted``),
    the pairs are pruned with the exact conditions above, and the IoU is computed for the survivors only.
    The cost follows the number of near pairs instead of ``N²``; the result equals the dense matrix's.
    """
    boxes = as_boxes(boxes)
    n = len(boxes)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
    if n < 2:
        return empty
    if not min_iou > 0:
        m = iou_matrix(boxes, boxes)
        i, j = np.nonzero(np.triu(m >= min_iou, k=1))
        return i.astype(np.int64), j.astype(np.int64), m[i, j]
    t = min(float(min_iou), 1.0)
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
    order = np.argsort(boxes[:, 0], kind="stable")
    xs = boxes[order, 0]
    slack = 1e-9 * (1.0 + np.abs(xs))  # rounding margin: the window may only be too wide, never too narrow
    hi = np.searchsorted(xs, xs + (1.0 - t) / t * w[order] + slack, side="right")
    pos = np.arange(n)
    counts = np.maximum(hi - pos - 1, 0)
    total = int(counts.sum())
    if total == 0:
        return empty
    first = np.repeat(pos, counts)
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    second = np.arange(total) - run_start + first + 1
    a, b = order[first], order[second]
    # exact necessary conditions, then the IoU itself
    wmax, hmax = np.maximum(w[a], w[b]), np.maximum(h[a], h[b])
    tol = 1e-9 * (1.0 + np.maximum(wmax, hmax))
    keep = np.abs(boxes[a, 0] - boxes[b, 0]) <= (1.0 - t) * wmax + tol
    keep &= np.abs(boxes[a, 1] - boxes[b, 1]) <= (1.0 - t) * hmax + tol
    keep &= np.minimum(w[a], w[b]) >= t * wmax - tol
    keep &= np.minimum(h[a], h[b]) >= t * hmax - tol
    a, b = a[keep], b[keep]
    ba, bb = boxes[a], boxes[b]
    iw = np.clip(np.minimum(ba[:, 2], bb[:, 2]) - np.maximum(ba[:, 0], bb[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(ba[:, 3], bb[:, 3]) - np.maximum(ba[:, 1], bb[:, 1]), 0.0, None)
    inter = iw * ih
    ious = inter / np.maximum(w[a] * h[a] + w[b] * h[b] - inter, UNION_EPS)
    keep = ious >= min_iou
    i, j, ious = np.minimum(a, b)[keep], np.maximum(a, b)[keep], ious[keep]
    sort = np.lexsort((j, i))
    return i[sort].astype(np.int64), j[sort].astype(np.int64), ious[sort]


def nms(boxes: object, scores: object, iou_threshold: float) -> np.ndarray:
    """Greedy class-agnostic non-maximum suppression.

    Boxes are visited by descending score (ties keep input order); a box is kept unless a kept box
    has IoU **strictly greater** than ``iou_threshold`` with it (spec step 10a). Returns the indices
    of the kept boxes into the input, in visiting order (descending score). Only the overlapping pairs
    are computed (:func:`iou_pairs`), so the cost follows the number of near-duplicates, not ``N²``.
    """
    boxes = as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    n = len(order)
    if n <= 1:
        return order.astype(np.int64)
    i, j, ious = iou_pairs(boxes[order], iou_threshold)
    over = ious > iou_threshold
    i, j = i[over], j[over]  # positions in visiting order, i < j: i can only suppress j
    if len(i) == 0:
        return order.astype(np.int64)
    starts = np.searchsorted(i, np.arange(n + 1)).tolist()
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for p in range(n):
        if suppressed[p]:
            continue
        keep.append(p)
        if starts[p + 1] > starts[p]:
            suppressed[j[starts[p] : starts[p + 1]]] = True
    return order[np.asarray(keep, dtype=np.int64)].astype(np.int64)


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
