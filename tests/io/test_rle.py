"""COCO RLE helpers against values worked out by hand (grand_engine.io.rle)."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.io import rle
from grand_engine.io.rle import RLEError

# 3×4 masks (H=3, W=4).
A = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]], bool)  # 4 px, rows 1-2, cols 1-2
B = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool)  # 4 px, rows 1-2, cols 2-3; A∩B = 2 px
C = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)  # 1 px at (0, 0)


def test_encode_matches_hand_computed_counts() -> None:
    # 2×2 with only the top-left pixel: column-major runs [0 zeros, 1 one, 3 zeros] -> "0", "1", "3".
    assert rle.encode(np.array([[1, 0], [0, 0]])) == {"size": [2, 2], "counts": "013"}
    # 1×6 [0 1 1 0 1 0]: runs [1, 2, 1, 1, 1]; from the 4th run on each is stored as the difference
    # to the run two before: 1-2 = -1 -> 'O' (31 + 48), 1-1 = 0 -> '0'.
    assert rle.encode(np.array([[0, 1, 1, 0, 1, 0]])) == {"size": [1, 6], "counts": "121O0"}
    assert rle.run_lengths({"size": [1, 6], "counts": "121O0"}).tolist() == [1, 2, 1, 1, 1]


def test_round_trip_single_and_stack() -> None:
    stack = np.stack([A, B, C])
    rles = rle.encode(stack)
    assert [r["size"] for r in rles] == [[3, 4]] * 3 and all(isinstance(r["counts"], str) for r in rles)
    assert np.array_equal(rle.decode(rles), stack)
    single = rle.decode(rle.encode(A))
    assert single.dtype == bool and np.array_equal(single, A)
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < 0.4
        assert np.array_equal(rle.decode(rle.encode(m)), m)


def test_area_bbox_iou_by_hand() -> None:
    rles = rle.encode(np.stack([A, B, C]))
    assert rle.area(rles).tolist() == [4, 4, 1]
    boxes = rle.to_bbox_xyxy(rles)
    assert boxes.dtype == np.float32
    assert boxes.tolist() == [[1, 1, 3, 3], [2, 1, 4, 3], [0, 0, 1, 1]]
    iou = rle.iou_matrix(rles[:2], rles)
    # A vs B: intersection 2, union 6 -> 1/3; C overlaps neither.
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou, [[1, 1 / 3, 0], [1 / 3, 1, 0]])
    assert rle.iou_matrix([], rles).shape == (0, 3)
    assert rle.area([]).shape == (0,) and rle.to_bbox_xyxy([]).shape == (0, 4)


def test_xywh_to_xyxy() -> None:
    out = rle.xywh_to_xyxy([[10, 20, 5, 7], [0, 0, 1.5, 2.5]])
    assert out.dtype == np.float32 and out.tolist() == [[10, 20, 15, 27], [0, 0, 1.5, 2.5]]
    assert rle.xywh_to_xyxy([1, 2, 3, 4]).tolist() == [[1, 2, 4, 6]]
    assert rle.xywh_to_xyxy([]).shape == (0, 4)


def test_uncompressed_counts_are_accepted() -> None:
    raw = {"size": [3, 4], "counts": [4, 2, 1, 2, 3]}  # column-major runs of A
    assert rle.normalize(raw) == rle.encode(A)
    assert np.array_equal(rle.decode(raw), A)
    assert rle.validate_rle(raw, 3, 4) == 4
    assert rle.area(raw).tolist() == [4]
    bytes_form = {"size": [3, 4], "counts": rle.encode(A)["counts"].encode()}
    assert np.array_equal(rle.decode(bytes_form), A)


def test_validate_returns_area() -> None:
    assert rle.validate_rle(rle.encode(B), 3, 4) == 4


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"size": [3, 4], "counts": "4!2"}, "outside the COCO alphabet"),
        ({"size": [3, 4], "counts": "42l"}, "ends in the middle of a number"),  # 'l' = 60 has the continuation bit
        ({"size": [3, 4], "counts": "0"}, "runs cover 0 pixels but size \\[3, 4\\] has 12"),
        ({"size": [3, 4], "counts": "0c0"}, "runs cover 19 pixels"),  # 'c' = 51 continues: 19 + (0 << 5)
        ({"size": [3, 4], "counts": "0O<"}, "negative"),  # 'O' = 31: sign bit set, value -1
        ({"size": [3, 4], "counts": [5, -1, 8]}, "negative"),
        ({"size": [3, 4], "counts": [4, 2, 1]}, "runs cover 7 pixels"),
        ({"size": [3, 4], "counts": 5}, "must be a string or a list"),
        ({"size": [3], "counts": "<"}, "size"),
        ({"size": [0, 4], "counts": ""}, "positive"),
        ({"counts": "<"}, "needs both"),
        ("not a dict", "must be a dict"),
        ({"size": [3, 4], "counts": "<"}, "zero area"),  # '<' = 12: one run of 12 zeros
    ],
)
def test_validate_rejects(bad: object, reason: str) -> None:
    with pytest.raises(RLEError, match=reason):
        rle.validate_rle(bad, 3, 4)


def test_validate_size_mismatch_and_unsafe_decode() -> None:
    good = rle.encode(A)
    with pytest.raises(RLEError, match=r"RLE size \[3, 4\] does not match the image size \[4, 3\]"):
        rle.validate_rle(good, 4, 3)
    # Counts that add up to far more than H*W would make the C decoder write past its buffer.
    huge = {"size": [3, 4], "counts": "0" + "1" * 3 + "o" * 10 + "0"}
    with pytest.raises(RLEError):
        rle.decode(huge)
    with pytest.raises(RLEError, match="one size"):
        rle.iou_matrix([good], [rle.encode(np.zeros((2, 2), bool))])


def test_validate_many_matches_single_checks_and_names_the_bad_index(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    masks = rng.random((6, 9, 7)) < np.linspace(0.05, 0.9, 6)[:, None, None]
    masks[:, 4, 3] = True
    rles = rle.encode(masks)
    expected = masks.reshape(6, -1).sum(1).tolist()
    with monkeypatch.context() as m:  # good compressed masks take the vectorised pass, never the slow one
        m.setattr(rle, "validate_rle", None)
        assert rle.validate_many(rles, 9, 7).tolist() == expected
    mixed = list(rles)
    mixed[2] = {"size": [9, 7], "counts": rle.run_lengths(rles[2]).tolist()}  # uncompressed: checked one by one
    assert rle.validate_many(mixed, 9, 7).tolist() == expected
    assert rle.validate_many([], 9, 7).shape == (0,)
    for bad, reason in [
        ({"size": [9, 7], "counts": "0!"}, "alphabet"),
        (rle.encode(np.zeros((9, 7), bool)), "zero area"),
        (rle.encode(np.ones((7, 9), bool)), "does not match"),
    ]:
        with pytest.raises(RLEError, match=reason) as info:
            rle.validate_many([*rles[:4], bad, *rles[4:]], 9, 7)
        assert info.value.index == 4
