"""Depth adapter on the tiny DPT-BEiT and Depth Anything V2 checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.depth import DepthAdapter, DepthMap, depth_size


def test_depth_size_by_hand() -> None:
    # 300 wide × 200 high, long side 64: scale 300/64 = 4.6875, height 200/4.6875 = 42.67 -> 43
    assert depth_size(200, 300, 64) == (43, 64, 4.6875)
    # 180 wide × 260 high: scale 260/64 = 4.0625, width 180/4.0625 = 44.3 -> 44
    assert depth_size(260, 180, 64) == (64, 44, 4.0625)
    # upsampling: long side 512 of a 100×50 image doubles... five-fold
    assert depth_size(50, 100, 512) == (256, 512, 100 / 512)
    with pytest.raises(ValueError):
        depth_size(10, 10, 0)


@pytest.mark.parametrize("name", ["depth-dpt-beit", "depth-anything-v2"])
def test_predict_sizes_and_batching(tiny_dir: Path, two_images: list[np.ndarray], name: str) -> None:
    adapter = load_adapter(ModelSpec(id=str(tiny_dir / name), family="depth"))
    assert isinstance(adapter, DepthAdapter)
    out = adapter.predict(two_images, long_side=64)
    assert [type(o) for o in out] == [DepthMap, DepthMap]
    assert [o.depth.shape for o in out] == [(43, 64), (64, 44)]
    assert [o.scale for o in out] == [4.6875, 4.0625]
    assert [o.image_size for o in out] == [(200, 300), (260, 180)]
    for o in out:
        assert o.depth.dtype == np.float32 and np.isfinite(o.depth).all()
        assert float(o.depth.std()) > 0  # a real prediction, not a constant fill
    # the batch [a, b, a] groups the two copies of a together; each result equals the single-image one
    a, b = two_images
    batched = adapter.predict([a, b, a], long_side=64)
    single = adapter.predict([a], long_side=64)[0]
    np.testing.assert_allclose(batched[0].depth, single.depth, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(batched[2].depth, single.depth, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(batched[1].depth, out[1].depth, rtol=1e-4, atol=1e-4)


def test_bad_input_names_the_image(tiny_dir: Path, two_images: list[np.ndarray]) -> None:
    adapter = load_adapter(ModelSpec(id=str(tiny_dir / "depth-dpt-beit"), family="depth"))
    gray = np.zeros((20, 30), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"image 1: expected an H×W×3 uint8 RGB array, got shape \(20, 30\)"):
        adapter.predict([two_images[0], gray])
