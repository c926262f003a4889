"""Box geometry against hand-computed values, in the continuous convention (no +1) and the pixel one (+1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grand_engine import geometry
from grand_engine.geometry import (
    as_boxes,
    box_area,
    box_centers,
    check_iou_convention,
    clip_boxes,
    iou,
    iou_matrix,
    iou_pairs,
    nms,
    order_corners,
    paired_iou,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_box_area_has_no_plus_one():
    assert box_area([0, 0, 10, 10]) == 100.0
    assert box_area([2, 3, 5, 7]) == 12.0
    np.testing.assert_array_equal(box_area([[0, 0, 10, 10], [0, 0, 0, 5], [5, 5, 4, 9]]), [100.0, 0.0, 0.0])


def test_as_boxes_shapes():
    assert as_boxes([]).shape == (0, 4)
    assert as_boxes([1, 2, 3, 4]).shape == (1, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        as_boxes([[1, 2, 3]])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),  # half overlap
        ([0, 0, 10, 10], [0, 0, 5, 5], 25 / 100),  # contained
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges share no area
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 100, 100], [0, 0, 100, 65], 0.65),
        ([0, 0, 100, 100], [2, 0, 100, 100], 0.98),
        ([3, 3, 3, 3], [3, 3, 3, 3], 0.0),  # two degenerate boxes: 0, not NaN
    ],
)
def test_iou_hand_values(a, b, expected):
    assert iou(a, b) == pytest.approx(expected, abs=1e-12)
    assert iou(b, a) == pytest.approx(expected, abs=1e-12)


def test_iou_exact_threshold_boundary():
    # 6500 / 10000 must compare >= 0.65 exactly (level1's voting boundary)
    assert iou([0, 0, 100, 100], [0, 0, 100, 65]) >= 0.65
    assert iou([0, 0, 100, 100], [0, 0, 100, 64.9]) < 0.65


def test_iou_matrix_shape_and_values():
    a = [[0, 0, 10, 10], [5, 5, 15, 15]]
    b = [[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 5]]
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    expected = [[1.0, 0.0, 0.25], [25 / 175, 25 / 175, 0.0]]
    np.testing.assert_allclose(m, expected, atol=1e-12)
    assert iou_matrix([], b).shape == (0, 3)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


box_strategy = st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(0.5, 300), st.floats(0.5, 300)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(box_strategy, min_size=1, max_size=8), st.lists(box_strategy, min_size=1, max_size=8))
def test_iou_matrix_properties(a, b):
    m = iou_matrix(a, b)
    assert np.all((m >= 0) & (m <= 1 + 1e-12))
    np.testing.assert_allclose(m, iou_matrix(b, a).T, atol=1e-12)
    np.testing.assert_allclose(np.diag(iou_matrix(a, a)), 1.0, atol=1e-12)


def test_nms_suppresses_strictly_above_threshold():
    boxes = [
        [0, 0, 100, 100],  # 0: score .5
        [0, 0, 100, 95],  # 1: IoU .95 with 0 -> suppressed by 0
        [0, 0, 100, 90],  # 2: IoU .90 with 0 exactly -> kept (strict >), IoU 90/95 with 1 (1 is gone)
        [200, 200, 300, 300],  # 3: separate
    ]
    scores = [0.5, 0.4, 0.3, 0.9]
    keep = nms(boxes, scores, 0.9)
    assert keep.tolist() == [3, 0, 2]


def test_nms_suppressed_box_does_not_suppress():
    # IoU(0,1) = 95/105 = .905 > .9, so 1 goes; IoU(1,2) = .905 too, but 1 is gone and IoU(0,2) = 90/110 = .818
    boxes = [[0, 0, 100, 100], [5, 0, 105, 100], [10, 0, 110, 100]]
    keep = nms(boxes, [0.9, 0.8, 0.7], 0.9)
    assert keep.tolist() == [0, 2]


def test_nms_ties_keep_input_order_and_empty():
    assert nms([[0, 0, 1, 1], [0, 0, 1, 1]], [0.5, 0.5], 0.9).tolist() == [0]
    assert nms(np.zeros((0, 4)), [], 0.5).tolist() == []
    with pytest.raises(ValueError):
        nms([[0, 0, 1, 1]], [0.1, 0.2], 0.5)


def test_iou_pairs_hand_case():
    boxes = [[0, 0, 100, 100], [0, 0, 100, 65], [0, 0, 100, 64.9], [500, 500, 510, 510], [0, 0, 100, 100]]
    i, j, ious = iou_pairs(boxes, 0.65)
    # (0,1) = .65 exactly; (0,2) = .649 no; (1,2) = 64.9/65; (0,4) = 1; (1,4) = .65; (2,4) = .649 no
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 4), (1, 2), (1, 4)]
    np.testing.assert_allclose(ious, [0.65, 1.0, 64.9 / 65, 0.65])
    assert [len(x) for x in iou_pairs(boxes[:1], 0.5)] == [0, 0, 0]


def _random_boxes(rng, n, scale=200.0):
    xy = rng.uniform(0, scale, size=(n, 2))
    wh = rng.uniform(0, 60, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.5, 0.65, 0.9, 1.0])
def test_iou_pairs_equals_dense_matrix(threshold):
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 400)
    boxes[:50] = boxes[50:100]  # exact duplicates (IoU 1)
    boxes[100:120, 2] = boxes[100:120, 0]  # zero-width boxes
    boxes[120:140] = np.round(boxes[120:140])
    dense = iou_matrix(boxes, boxes)
    ei, ej = np.nonzero(np.triu(dense >= threshold, k=1))
    i, j, ious = iou_pairs(boxes, threshold)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == list(zip(ei.tolist(), ej.tolist(), strict=True))
    np.testing.assert_allclose(ious, dense[ei, ej], atol=1e-12)


int_box = st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 12), st.integers(0, 12)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]
)


@settings(max_examples=80, deadline=None)
@given(st.lists(int_box, min_size=2, max_size=30), st.sampled_from([0.25, 0.5, 0.65, 0.9, 1.0]))
def test_iou_pairs_exact_on_integer_grids(boxes, threshold):
    # small integer boxes make many IoUs land exactly on the thresholds
    dense = iou_matrix(boxes, boxes)
    ei, ej = np.nonzero(np.triu(dense >= threshold, k=1))
    i, j, _ = iou_pairs(boxes, threshold)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == list(zip(ei.tolist(), ej.tolist(), strict=True))


def _greedy_nms(boxes, scores, threshold):
    """Textbook greedy NMS, one pair at a time."""
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    keep = []
    for k in order:
        if all(iou(boxes[k], boxes[m]) <= threshold for m in keep):
            keep.append(k)
    return keep


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.9])
def test_nms_matches_textbook_greedy(threshold):
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 150, scale=150.0)
    scores = rng.uniform(size=150)
    keep = nms(boxes, scores, threshold)
    assert keep.tolist() == _greedy_nms(boxes, scores, threshold)
    kept = boxes[keep]
    m = iou_matrix(kept, kept)
    np.fill_diagonal(m, 0)
    assert m.max() <= threshold


def test_clip_order_centers_and_conversions():
    clipped = clip_boxes([[-5, -5, 50, 700], [10, 10, 20, 20]], 640, 480)
    np.testing.assert_array_equal(clipped, [[0, 0, 50, 480], [10, 10, 20, 20]])
    np.testing.assert_array_equal(order_corners([[10, 20, 0, 5]]), [[0, 5, 10, 20]])
    np.testing.assert_array_equal(box_centers([[0, 0, 10, 20], [2, 2, 4, 4]]), [[5, 10], [3, 3]])
    np.testing.assert_array_equal(xywh_to_xyxy([[10, 20, 30, 40]]), [[10, 20, 40, 60]])
    np.testing.assert_array_equal(xyxy_to_xywh([[10, 20, 40, 60]]), [[10, 20, 30, 40]])


# -- the pixel-inclusive convention (+1 on every width and height) --------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 9, 9], [0, 0, 9, 9], 1.0),
        ([0, 0, 9, 9], [0, 0, 4, 4], 25 / 100),  # 10×10 pixels hold 5×5 pixels
        ([0, 0, 9, 9], [5, 0, 14, 9], 50 / 150),  # half overlap: 5 of 10 columns shared
        ([0, 0, 10, 10], [10, 0, 20, 10], 11 / 231),  # touching edges share one column of 11 pixels
        ([0, 0, 10, 10], [12, 0, 20, 10], 0.0),
        ([0, 0, 99, 99], [0, 0, 99, 64], 0.65),  # 100×65 of 100×100 pixels
        ([3, 3, 3, 3], [3, 3, 3, 3], 1.0),  # one pixel each, the same pixel
    ],
)
def test_pixel_iou_hand_values(a, b, expected):
    assert iou(a, b, "pixel") == pytest.approx(expected, abs=1e-12)
    assert iou(b, a, "pixel") == pytest.approx(expected, abs=1e-12)
    assert iou_matrix([a], [b], "pixel")[0, 0] == pytest.approx(expected, abs=1e-12)
    assert box_area([0, 0, 9, 9], "pixel") == 100.0 and box_area([0, 0, 9, 9]) == 81.0


def test_a_pair_near_065_agrees_in_one_convention_only():
    # 100×65 of 100×100 pixels is 0.65 exactly; the same corners as continuous boxes give 64/99 = 0.6465
    a, b = [0, 0, 99, 99], [0, 0, 99, 64]
    assert iou(a, b, "pixel") >= 0.65 > iou(a, b, "continuous")
    assert iou(a, b, "continuous") == pytest.approx(64 / 99, abs=1e-12)
    assert [len(x) for x in iou_pairs([a, b], 0.65, "pixel")] == [1, 1, 1]
    assert [len(x) for x in iou_pairs([a, b], 0.65, "continuous")] == [0, 0, 0]


def test_pixel_iou_is_the_references_arithmetic_bit_for_bit():
    # the reference: inter = max(0, xB - xA + 1) * max(0, yB - yA + 1); area = (x2 - x1 + 1) * (y2 - y1 + 1);
    # iou = inter / (area_a + area_b - inter), all in Python floats
    rng = np.random.default_rng(7)
    boxes = np.round(_random_boxes(rng, 60) * 4) / 4
    for a in boxes[:20].tolist():
        for b in boxes.tolist():
            inter = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
            area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
            area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
            assert iou(a, b, "pixel") == inter / float(area_a + area_b - inter)
    m = iou_matrix(boxes, boxes, "pixel")
    assert all(m[i, j] == iou(boxes[i], boxes[j], "pixel") for i in range(60) for j in range(60))


def test_unknown_convention_is_refused_by_name():
    assert check_iou_convention("pixel", "level1") == "pixel"
    with pytest.raises(ValueError, match=r"level1: iou_convention must be one of continuous, pixel; got 'pixle'"):
        check_iou_convention("pixle", "level1")
    with pytest.raises(ValueError, match="unknown IoU convention"):
        iou([0, 0, 1, 1], [0, 0, 1, 1], "+1")


@pytest.mark.parametrize("convention", ["continuous", "pixel"])
@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.65, 0.9, 1.0])
def test_iou_pairs_equals_dense_matrix_in_both_conventions(convention, threshold):
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, 300)
    boxes[:40] = boxes[40:80]  # exact duplicates
    boxes[80:100, 2] = boxes[80:100, 0]  # zero-width boxes: no area, but one pixel wide under the +1
    boxes[100:160] = np.round(boxes[100:160])
    dense = iou_matrix(boxes, boxes, convention)
    with pytest.MonkeyPatch.context() as mp:  # candidates tested a few at a time give the same pairs
        mp.setattr(geometry, "CANDIDATE_BLOCK", 97)
        blocked = iou_pairs(boxes, threshold, convention)
    assert [x.tolist() for x in blocked] == [x.tolist() for x in iou_pairs(boxes, threshold, convention)]
    for sample in (boxes, boxes[:30]):  # the vectorised path, and the plain-Python one below SMALL_INPUT
        n = len(sample)
        ei, ej = np.nonzero(np.triu(dense[:n, :n] >= threshold, k=1))
        i, j, ious = iou_pairs(sample, threshold, convention)
        assert list(zip(i.tolist(), j.tolist(), strict=True)) == list(zip(ei.tolist(), ej.tolist(), strict=True))
        assert ious.tolist() == dense[ei, ej].tolist()  # the same arithmetic: equal, not merely close


@settings(max_examples=80, deadline=None)
@given(
    st.lists(int_box, min_size=2, max_size=60),
    st.sampled_from([0.25, 0.5, 0.65, 0.9, 1.0]),
    st.sampled_from(["continuous", "pixel"]),
)
def test_plain_python_and_vectorised_paths_agree_exactly(boxes, threshold, convention):
    # integer boxes put many IoUs exactly on the thresholds; both paths must decide them alike
    small = iou_pairs(boxes, threshold, convention)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(geometry, "SMALL_INPUT", 0)
        big = iou_pairs(boxes, threshold, convention)
        big_nms = nms(boxes, list(range(len(boxes), 0, -1)), threshold)
    assert [x.tolist() for x in small] == [x.tolist() for x in big]
    assert nms(boxes, list(range(len(boxes), 0, -1)), threshold).tolist() == big_nms.tolist()
    dense = iou_matrix(boxes, boxes, convention)
    ei, ej = np.nonzero(np.triu(dense >= threshold, k=1))
    assert list(zip(small[0].tolist(), small[1].tolist(), strict=True)) == list(
        zip(ei.tolist(), ej.tolist(), strict=True)
    )


def test_paired_iou_matches_the_matrix():
    rng = np.random.default_rng(4)
    a, b = _random_boxes(rng, 50), _random_boxes(rng, 50)
    for convention in ("continuous", "pixel"):
        assert paired_iou(a, b, convention).tolist() == np.diag(iou_matrix(a, b, convention)).tolist()
    with pytest.raises(ValueError, match="3 boxes against 2"):
        paired_iou(a[:3], b[:2])


@pytest.mark.parametrize("n", [20, 400])  # below and above SMALL_INPUT
@pytest.mark.parametrize("convention", ["continuous", "pixel"])
def test_grouped_pairs_and_nms_equal_one_call_per_group(n, convention):
    rng = np.random.default_rng(5)
    # crowded: many pairs, many of them across groups
    boxes = np.round(_random_boxes(rng, n, scale=80.0 if n > 100 else 10.0))
    groups = rng.integers(0, 5, size=n)
    scores = np.round(rng.uniform(size=n), 1)  # ties
    i, j, ious = iou_pairs(boxes, 0.5, convention, groups=groups)
    expected = []
    for g in range(5):
        members = np.flatnonzero(groups == g)
        gi, gj, gv = iou_pairs(boxes[members], 0.5, convention)
        expected += [(members[a], members[b], v) for a, b, v in zip(gi, gj, gv, strict=True)]
    assert list(zip(i.tolist(), j.tolist(), ious.tolist(), strict=True)) == sorted(
        (int(a), int(b), float(v)) for a, b, v in expected
    )
    assert len(expected) >= 3 and len(iou_pairs(boxes, 0.5, convention)[0]) > len(expected)  # groups do separate
    keep = nms(boxes, scores, 0.5, groups=groups)
    per_group = []
    for g in range(5):
        members = np.flatnonzero(groups == g)
        per_group += members[nms(boxes[members], scores[members], 0.5)].tolist()
    assert keep.tolist() == per_group
    with pytest.raises(ValueError, match="group labels"):
        iou_pairs(boxes, 0.5, groups=groups[:-1])
