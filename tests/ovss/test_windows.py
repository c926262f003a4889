"""Sliding-window geometry: known offsets by hand, and exact coverage over many sizes."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.ovss.windows import resized_size, window_grid, window_starts


def test_resized_size_sets_the_short_side() -> None:
    assert resized_size(37, 53, 224) == (224, 321)  # 53 · 224 / 37 = 320.86
    assert resized_size(53, 37, 224) == (321, 224)
    assert resized_size(100, 100, 224) == (224, 224)
    assert resized_size(1000, 1500, 448) == (448, 672)
    with pytest.raises(ValueError, match="positive"):
        resized_size(0, 10, 224)


@pytest.mark.parametrize(
    "length,window,stride,starts",
    [
        (224, 224, 112, [0]),
        (321, 224, 112, [0, 97]),  # ceil(97 / 112) + 1 = 2 windows, the last flush with the border
        (448, 224, 112, [0, 112, 224]),
        (450, 224, 112, [0, 112, 224, 226]),
        (500, 224, 224, [0, 224, 276]),
    ],
)
def test_window_starts_by_hand(length: int, window: int, stride: int, starts: list[int]) -> None:
    assert window_starts(length, window, stride) == starts


def test_window_starts_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError, match="stride"):
        window_starts(300, 224, 0)
    with pytest.raises(ValueError, match="stride"):
        window_starts(300, 224, 225)
    with pytest.raises(ValueError, match="shorter"):
        window_starts(200, 224, 112)


def test_windows_cover_every_pixel_exactly_inside_the_image() -> None:
    for window in (1, 5, 16, 224):
        for stride in sorted({1, max(1, window // 3), max(1, window // 2), window}):
            for length in range(window, window * 3 + 3):
                starts = np.array(window_starts(length, window, stride))
                assert starts.min() >= 0 and (starts + window).max() <= length
                assert starts[0] == 0 and starts[-1] + window == length
                assert (np.diff(starts) <= stride).all() and (np.diff(starts) > 0).all()
                # coverage count per pixel from a difference array: every pixel inside at least one window
                delta = np.zeros(length + 1, dtype=np.int64)
                np.add.at(delta, starts, 1)
                np.add.at(delta, starts + window, -1)
                assert np.cumsum(delta)[:length].min() >= 1, (length, window, stride)


def test_window_grid_is_row_major() -> None:
    assert window_grid(321, 448, 224, 112) == [(0, 0), (0, 112), (0, 224), (97, 0), (97, 112), (97, 224)]
