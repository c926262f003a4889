"""What the video stages share: masklet statistics, key frames, the outlined views; answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.stages.video_common import (
    OUTLINE_RGB,
    highlight,
    key_positions,
    masklet_stats,
    object_crop,
    side_by_side,
    uniform_positions,
)


@pytest.mark.parametrize(
    ("areas", "rate", "expected"),
    [
        # visible in 3 of 4 annotated frames (None: no annotation), first to last visible spans positions 1..4
        (
            [0, 10, None, 20, 30],
            6.0,
            {"visible_fraction": 0.75, "mean_area": 20.0, "duration": 4 / 6, "visibility_changes": 0},
        ),
        # on, off, on after the first appearance: two changes; the leading zero does not count
        ([0, 5, 0, 5], 2.0, {"visible_fraction": 0.5, "mean_area": 5.0, "duration": 1.5, "visibility_changes": 2}),
        ([0, None, 0], 6.0, {"visible_fraction": 0.0, "mean_area": 0.0, "duration": 0.0, "visibility_changes": 0}),
        ([7], 6.0, {"visible_fraction": 1.0, "mean_area": 7.0, "duration": 1 / 6, "visibility_changes": 0}),
    ],
)
def test_masklet_stats(areas: list, rate: float, expected: dict) -> None:
    assert masklet_stats(areas, rate) == pytest.approx(expected)


def test_key_and_uniform_positions() -> None:
    areas = [0, 5, 9, None, 9, 3, 0, 2, 0]
    assert key_positions(areas, 1) == [2]  # the largest mask, the earlier of two equal ones
    # visible positions 1 2 4 5 7: linspace over them picks 1, 4 (index 2), 7; the key frame first
    assert key_positions(areas, 3) == [2, 1, 4]
    assert key_positions([0, None], 2) == [] and key_positions(areas, 0) == []
    assert uniform_positions(areas, 4) == [1, 3, 5, 7]  # 1 + 6 * k / 3
    assert uniform_positions(areas, 20) == [1, 2, 3, 4, 5, 6, 7]
    assert uniform_positions([0, 0], 4) == []


def test_highlight_draws_the_outline_only() -> None:
    frame = np.zeros((10, 10, 3), np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[2:7, 3:8] = True  # a 5x5 square
    out = highlight(frame, mask, width=1)
    red = np.all(out == OUTLINE_RGB, axis=-1)
    border = mask.copy()
    border[3:6, 4:7] = False  # the square minus its 3x3 inside
    assert np.array_equal(red, border)
    assert frame.sum() == 0  # the input is not changed
    assert np.array_equal(highlight(frame, np.zeros((10, 10), bool)), frame)


def test_object_crop_grows_the_box_and_clips_to_the_frame() -> None:
    frame = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:40] = True  # 20x20 box; 25 % context adds 5 px a side
    assert object_crop(frame, mask, context=0.25).shape == (30, 30, 3)
    edge = np.zeros((40, 60), bool)
    edge[0:4, 0:4] = True  # 4x4 at the corner: grown to 16 px a side, then clipped at the frame's top left
    assert object_crop(frame, edge, context=0.0).shape == (10, 10, 3)
    with pytest.raises(ValueError, match="empty"):
        object_crop(frame, np.zeros((40, 60), bool))


def test_side_by_side_scales_to_the_first_height() -> None:
    a = np.zeros((20, 10, 3), np.uint8)
    b = np.zeros((10, 10, 3), np.uint8)
    out = side_by_side([a, b])
    assert out.shape == (20, 10 + 4 + 20, 3)
    assert (out[:, 10:14] == 255).all()
    assert side_by_side([a]) is a
