"""Sliding-window geometry: the image is resized to a fixed short side and covered by square windows at the
backbones' input resolution, as training-free open-vocabulary segmenters evaluate (CLIP sees each window at the
size it was trained on, so its position embeddings are used as they are).

Windows along one axis start at ``min(i · stride, length - window)`` for ``i = 0 … ceil((length - window) /
stride)``: the first starts at 0, the last ends exactly at the border, consecutive ones overlap by
``window - stride`` pixels or more, and every pixel is covered.
"""

from __future__ import annotations

import math

__all__ = ["resized_size", "window_grid", "window_starts"]


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` of an image of ``height × width`` resized so that its shorter side is ``short_side`` (the longer
    side rounded to the nearest pixel, never below ``short_side``)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width} (height x width)")
    if short_side < 1:
        raise ValueError(f"short side must be at least 1, got {short_side!r}")
    scale = short_side / min(height, width)
    if height <= width:
        return short_side, max(short_side, round(width * scale))
    return max(short_side, round(height * scale)), short_side


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along an axis of ``length`` pixels (see the module docstring)."""
    if window < 1:
        raise ValueError(f"window must be at least 1 pixel, got {window!r}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be between 1 and the window size {window}, got {stride!r}")
    if length < window:
        raise ValueError(f"an axis of {length} pixels is shorter than the {window}-pixel window; resize it first")
    count = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


def window_grid(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every window over a ``height × width`` image, row by row."""
    return [(y, x) for y in window_starts(height, window, stride) for x in window_starts(width, window, stride)]
