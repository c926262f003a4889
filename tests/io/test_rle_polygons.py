"""``rle.from_polygons``: COCO polygons rasterised into one table RLE (the union of the polygons)."""

from __future__ import annotations

import pytest

from grand_engine.io import rle


def test_a_square_and_the_union_of_two_overlapping_squares():
    square = rle.from_polygons([[0, 0, 10, 0, 10, 10, 0, 10]], 20, 30)
    assert square["size"] == [20, 30] and isinstance(square["counts"], str)
    assert int(rle.area(square)[0]) == 100
    assert rle.to_bbox_xyxy(square).tolist() == [[0.0, 0.0, 10.0, 10.0]]
    union = rle.from_polygons([[0, 0, 10, 0, 10, 10, 0, 10], [5, 5, 15, 5, 15, 15, 5, 15]], 20, 30)
    assert int(rle.area(union)[0]) == 100 + 100 - 25


@pytest.mark.parametrize("polygons", [[], [[1, 2, 3, 4]], [[1, 2, 3, 4, 5]], [[0, 0, 1, 0, float("nan"), 1]]])
def test_malformed_polygons_are_refused(polygons):
    with pytest.raises(rle.RLEError):
        rle.from_polygons(polygons, 10, 10)
