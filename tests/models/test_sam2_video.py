"""The SAM 2 video adapter on the tiny checkpoint, loaded through ``load_adapter`` as a real one is: conditioning
frames keep their masks, every frame gets one, objects starting on different frames are tracked, inputs are
checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.sam2_video import Sam2Video
from grand_engine.models.tiny import random_weights
from tests.models.video_checkpoints import video_tiny_dir  # noqa: F401


@pytest.fixture(scope="module")
def sam2(video_tiny_dir: Path) -> Sam2Video:  # noqa: F811
    return load_adapter(ModelSpec(id=str(video_tiny_dir / "sam2-video"), family="sam2_video", dtype="float32"))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(36, 52, 3), dtype=np.uint8) for _ in range(4)]


def box(top: int, left: int, h: int, w: int, shape: tuple[int, int] = (36, 52)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top : top + h, left : left + w] = True
    return m


def test_loads_the_tiny_checkpoint_like_a_real_one(sam2: Sam2Video, video_tiny_dir: Path) -> None:  # noqa: F811
    assert isinstance(sam2, Sam2Video) and random_weights(video_tiny_dir / "sam2-video")
    assert sam2.processor.target_size == 256 and sam2.model.config.image_size == 256


def test_propagate_keeps_conditioning_masks_and_fills_every_frame(sam2: Sam2Video, frames: list) -> None:
    a, b = box(2, 3, 10, 12), box(20, 30, 8, 9)
    out = sam2.propagate(frames, {4: {0: a, 2: b}, 9: {1: b}})
    assert sorted(out) == [4, 9]
    assert [m.shape for m in out[4]] == [(36, 52)] * 4 and all(m.dtype == bool for m in out[4])
    assert np.array_equal(out[4][0], a) and np.array_equal(out[4][2], b)
    assert np.array_equal(out[9][1], b)
    assert sam2.propagate(frames, {}) == {}


def test_propagate_checks_its_inputs(sam2: Sam2Video, frames: list) -> None:
    with pytest.raises(ValueError, match="outside the clip"):
        sam2.propagate(frames, {1: {7: box(0, 0, 2, 2)}})
    with pytest.raises(ValueError, match=r"mask \(10, 10\)"):
        sam2.propagate(frames, {1: {0: np.ones((10, 10), bool)}})
    with pytest.raises(ValueError, match="no conditioning frame"):
        sam2.propagate(frames, {1: {}})
    with pytest.raises(ValueError, match="share one size"):
        sam2.propagate([frames[0], frames[1][:20]], {1: {0: box(0, 0, 2, 2)}})


def test_segment_points_gives_a_mask_and_a_score_per_point(sam2: Sam2Video, frames: list) -> None:
    masks, scores = sam2.segment_points(frames[0], [(5, 5), (40.5, 30)])
    assert [m.shape for m in masks] == [(36, 52), (36, 52)] and scores.shape == (2,)
    assert np.isfinite(scores).all()
    assert sam2.segment_points(frames[0], []) == ([], pytest.approx(np.zeros(0)))
