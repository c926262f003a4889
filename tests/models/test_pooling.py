"""Region embeddings pooled from one image pass (grand_engine.models.pooling, HFClipAdapter.encode_regions): the
patch-grid geometry against hand counts, the pooling head against SigLIP's own head, and the adapter against its
whole-image embedding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.pooling import attention_pool, box_coverage, grid_edges, mask_coverage, region_weights

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_grid_edges_map_patches_back_to_the_original_axis() -> None:
    # 768 px stretched to 384: 27 patches of 14 px, each 28 original px; the last cell takes the 6 unread px too
    edges = grid_edges(768, 384, 14)
    assert len(edges) == 28
    assert edges[:3].tolist() == [0.0, 28.0, 56.0]
    assert edges[26] == 26 * 28 and edges[27] == 768.0
    with pytest.raises(ValueError, match="no 14-pixel patch"):
        grid_edges(100, 10, 14)


def test_box_coverage_is_the_share_of_each_cell_inside_the_box() -> None:
    ey, ex = np.array([0.0, 2.5, 5.0, 10.0]), np.array([0.0, 4.5, 20.0])
    cover = box_coverage([3, 2, 9, 5], ey, ex)
    # cell (0, 0) is 2.5 × 4.5; the box covers y 2..2.5 and x 3..4.5 of it: 0.75 / 11.25
    assert cover[0, 0] == pytest.approx(0.75 / 11.25)
    # cell (1, 0): y 2.5..5 all inside, x 3..4.5 → 2.5 × 1.5 of 2.5 × 4.5
    assert cover[1, 0] == pytest.approx(1.5 / 4.5)
    # cell (1, 1): y 2.5..5, x 4.5..9 of 2.5 × 15.5
    assert cover[1, 1] == pytest.approx(4.5 / 15.5)
    assert cover[2].tolist() == [0.0, 0.0]
    # corners in any order
    assert np.array_equal(box_coverage([9, 5, 3, 2], ey, ex), cover)


def test_mask_coverage_is_exact_at_fractional_cell_edges() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:5, 3:9] = True  # a rectangle: the same as its box
    ey, ex = np.array([0.0, 2.5, 5.0, 10.0]), np.array([0.0, 4.5, 20.0])
    assert np.allclose(mask_coverage(mask, ey, ex), box_coverage([3, 2, 9, 5], ey, ex))
    # any mask: against counting 4×4 sub-pixels (edges on quarter pixels are exact there)
    blob = rng.random((12, 16)) > 0.6
    ey, ex = np.array([0.0, 3.25, 7.5, 12.0]), np.array([0.0, 5.75, 9.0, 16.0])
    fine = np.repeat(np.repeat(blob, 4, axis=0), 4, axis=1)
    expected = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            cell = fine[int(ey[i] * 4) : int(ey[i + 1] * 4), int(ex[j] * 4) : int(ex[j + 1] * 4)]
            expected[i, j] = cell.mean()
    assert np.allclose(mask_coverage(blob, ey, ex), expected)
    assert not mask_coverage(np.zeros((4, 4), bool), np.array([0.0, 4.0]), np.array([0.0, 4.0])).any()


def test_region_weights_name_a_bad_region() -> None:
    weights = region_weights([[0, 0, 10, 10], np.ones((10, 10), bool)], 10, 10, (28, 28), 14)
    assert weights.shape == (2, 4) and np.allclose(weights, 1.0)
    with pytest.raises(ValueError, match="region 1 covers no pixel"):
        region_weights([[0, 0, 10, 10], np.zeros((10, 10), bool)], 10, 10, (28, 28), 14)
    with pytest.raises(ValueError, match="region 0: mask is"):
        region_weights([np.ones((5, 5), bool)], 10, 10, (28, 28), 14)


@pytest.fixture(scope="module")
def siglip(tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / "siglip2"), family="hf_clip", dtype="float32"))


def test_attention_pool_is_siglips_head_over_the_covered_patches(siglip) -> None:
    import torch

    head = siglip.model.vision_model.head
    torch.manual_seed(0)
    hidden = torch.randn(729, head.probe.shape[-1])
    with torch.inference_mode():
        whole = head(hidden[None])[0]
        subset = torch.tensor([0, 5, 6, 100, 728])
        only = head(hidden[subset][None])[0]
        weights = torch.zeros(2, 729)
        weights[0] = 1.0
        weights[1, subset] = 1.0
        pooled = attention_pool(head, hidden, weights)
        # equal partial coverage everywhere is no coverage difference: the same as full coverage
        half = attention_pool(head, hidden, torch.full((1, 729), 0.5))
    assert torch.allclose(pooled[0], whole, atol=1e-5)
    assert torch.allclose(pooled[1], only, atol=1e-5)
    assert torch.allclose(half[0], whole, atol=1e-5)


def test_a_whole_image_region_is_the_image_embedding(siglip) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)
    full = siglip.encode_images([image])[0]
    mask = np.ones((90, 130), dtype=bool)
    left = [0, 0, 65, 90]
    regions = siglip.encode_regions([image, image], [[[0, 0, 130, 90], mask, left], []])
    assert regions[0].shape == (3, len(full)) and regions[1].shape == (0, len(full))
    assert np.allclose(regions[0][0], full, atol=1e-5)
    assert np.allclose(regions[0][1], full, atol=1e-5)
    assert np.allclose(np.linalg.norm(regions[0], axis=1), 1.0, atol=1e-5)
    assert not np.allclose(regions[0][2], full, atol=1e-3)  # half the image pools other patches


def test_a_family_without_a_pooling_head_says_to_use_crops(tiny_dir: Path) -> None:
    clip = load_adapter(ModelSpec(id=f"local-dir:{tiny_dir / 'clip-vit'}", family="clip"))
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="use mode 'crops'"):
        clip.encode_regions([image], [[[0, 0, 32, 32]]])
