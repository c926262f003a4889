"""The ``masks`` stage's fast paths give exactly what the plain definitions give.

* :meth:`MaskPool.best` (spatially indexed pairs above the threshold) against the dense IoU matrix, row by row:
  highest IoU, first pool entry on ties, ``None`` below the threshold.
* :meth:`MaskPool.add_annotations` (Arrow columns) against :meth:`MaskPool.add` (Python rows), bad entries included.
"""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.geometry import iou_matrix
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.masks import MaskPool, _annotation_array
from grand_engine.testing import make_unit


def _dense_best(a: np.ndarray, b: np.ndarray, t: float, convention: str = "continuous") -> list:
    out = []
    for row in iou_matrix(a, b, convention) if len(a) else []:
        j = int(np.argmax(row))
        out.append((j, float(row[j])) if row[j] >= t else None)
    return out


def _boxes(rng: np.random.Generator, k: int) -> np.ndarray:
    sides = rng.choice([0.0, 0.5, 1.0, 5.0, 50.0, 200.0, 1000.0], size=(k, 2)) * rng.uniform(0.5, 1.5, size=(k, 2))
    corner = rng.uniform(-50, 300, size=(k, 2))
    if rng.random() < 0.5:  # integer boxes: exact ties and IoUs exactly at the threshold
        sides, corner = np.round(sides), np.round(corner)
    if rng.random() < 0.1:
        corner[:, 1] = 7.0  # every box on one row
    return np.concatenate([corner, corner + sides], axis=1)


@pytest.mark.parametrize("convention", ["continuous", "pixel"])
@pytest.mark.parametrize("seed", range(4))
def test_best_equals_the_dense_matrix(seed, convention):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        a, b = _boxes(rng, int(rng.integers(0, 60))), _boxes(rng, int(rng.integers(1, 60)))
        if len(a) and rng.random() < 0.5:  # near-copies and duplicates in the pool
            k = min(len(a), len(b)) // 2
            b[:k] = a[:k] + rng.choice([0.0, 1e-9, 0.5], size=(k, 4))
            b = np.concatenate([b, b[:3]])
        pool = MaskPool(b, [{}] * len(b), ["sa1b"] * len(b))
        for t in (0.0, 0.3, 0.5, 0.65, 0.9, 1.0):
            assert pool.best(a, t, convention) == _dense_best(a, b, t, convention)


def test_best_known_answer_first_on_ties():
    pool = MaskPool(np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10], [0, 0, 10, 12.5]], float), [{}] * 4, [])
    got = pool.best(np.array([[0, 0, 10, 10], [21, 0, 30, 10], [100, 100, 101, 101]], float), 0.65)
    assert got == [(0, 1.0), (1, 0.9), None]  # entry 2 ties entry 0 at 1.0: the first wins; 10x12.5 has IoU 0.8


SIZE = [40, 60]  # H, W


def _ann(i: int, bbox, seg):
    return {
        "id": i,
        "bbox": bbox,
        "area": 1.0,
        "predicted_iou": 0.9,
        "stability_score": 0.9,
        "point_coords": [],
        "crop_box": None,
        "segmentation": seg,
    }


def _seg(counts="PP1", size=SIZE):
    return {"size": size, "counts": counts}


def _unit(rows: list) -> UnitInput:
    """A unit whose ``sa1b`` table has one row of annotations per entry of ``rows`` (``img0``, ``img1``, …)."""
    sa1b = [{"image_id": f"img{k}", "annotations": anns} for k, anns in enumerate(rows)]
    return make_unit([r["image_id"] for r in sa1b], inputs={"sa1b": sa1b})


def _both(anns: list) -> tuple[MaskPool, MaskPool]:
    unit = _unit([[_ann(0, [1, 1, 2, 2], _seg())], anns])  # the second row: a sliced list in the column
    arrow, rows = MaskPool.empty(), MaskPool.empty()
    arrow.add_annotations(_annotation_array(unit, "sa1b", "img1"), "sa1b", "sa1b.annotations", SIZE)
    plain = unit.input_row("sa1b", "img1")["annotations"] or []
    rows.add([a["bbox"] for a in plain], [a["segmentation"] for a in plain], "sa1b", "sa1b.annotations", SIZE)
    return arrow, rows


def test_add_annotations_equals_add_with_skipped_entries():
    anns = [
        _ann(1, [5, 6, 1, 2], _seg("a1")),  # inverted corners: ordered
        _ann(2, None, _seg("b2")),  # no box: skipped
        _ann(3, [0, 0, 4, 4], None),  # no mask: skipped
        _ann(4, [0, float("nan"), 4, 4], _seg("c3")),  # non-finite box: skipped
        _ann(5, [0, None, 4, 4], _seg("d4")),  # null coordinate: skipped
        _ann(6, [10, 20, 30, 40], _seg("e5")),
    ]
    arrow, rows = _both(anns)
    assert arrow.rles == rows.rles == [_seg("a1"), _seg("e5")]
    assert arrow.sources == rows.sources == ["sa1b", "sa1b"]
    np.testing.assert_array_equal(arrow.boxes, rows.boxes)
    np.testing.assert_array_equal(arrow.boxes, [[1, 2, 5, 6], [10, 20, 30, 40]])


@pytest.mark.parametrize(
    ("seg", "shown"), [(_seg(size=[60, 40]), "[60, 40]"), (_seg(counts=""), "[40, 60]"), (_seg(size=None), "[]")]
)
def test_add_annotations_raises_like_add(seg, shown):
    anns = [_ann(1, None, _seg(size=[1, 1])), _ann(2, [0, 0, 4, 4], seg)]  # the first is skipped, not an error
    with pytest.raises(ValueError) as arrow_err:
        _both(anns)
    unit = _unit([anns])
    plain = unit.input_row("sa1b", "img0")["annotations"]
    with pytest.raises(ValueError) as rows_err:
        MaskPool.empty().add([a["bbox"] for a in plain], [a["segmentation"] for a in plain], "sa1b", "w", SIZE)
    assert str(arrow_err.value) == str(rows_err.value).replace("w[", "sa1b.annotations[")
    assert f"sa1b.annotations[1]: mask size {shown} is not the image's" in str(arrow_err.value)


def test_annotation_array_null_list_and_missing_table():
    unit = _unit([None])
    assert len(_annotation_array(unit, "sa1b", "img0")) == 0
    assert _annotation_array(unit, "sam_masks", "img0") is None  # not there: the row path reports it
