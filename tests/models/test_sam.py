"""segment-anything adapter on the tiny SAM (the real 1024-pixel input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.models.base import load_adapter
from grand_engine.models.sam import SamAdapter, box_prompts


@pytest.fixture(scope="module")
def sam(tiny_dir: Path) -> SamAdapter:
    return load_adapter(ModelSpec(id=str(tiny_dir / "sam-vit-tiny"), family="sam"))


def test_box_prompts_by_hand() -> None:
    # 300 wide × 200 high into a 256 input: long side 300 -> 256, short side 200·256/300 = 170.67 -> 171
    prompts = box_prompts(np.array([[30, 20, 150, 100]]), (200, 300), 256)
    np.testing.assert_allclose(
        prompts, [[30 * 256 / 300, 20 * 171 / 200, 150 * 256 / 300, 100 * 171 / 200]], rtol=1e-6
    )
    np.testing.assert_allclose(prompts, [[25.6, 17.1, 128.0, 85.5]], rtol=1e-6)


def test_segment_boxes_are_xyxy_prompts(sam: SamAdapter, two_images: list[np.ndarray]) -> None:
    assert sam.img_size == 1024  # the real SAM input side
    image = two_images[0]
    boxes = np.array([[30, 20, 150, 100], [0, 0, 60, 50], [100, 60, 290, 190]], dtype=np.float32)
    masks, ious = sam.segment_boxes_with_scores(image, boxes)
    assert len(masks) == 3 and ious.shape == (3,) and ious.dtype == np.float32
    assert all(m["size"] == [200, 300] and isinstance(m["counts"], str) for m in masks)
    # the same masks as segment-anything's documented numpy API, whose `box` is xyxy
    sam.predictor.set_image(image)
    for box, mask in zip(boxes, masks, strict=True):
        ref, _, _ = sam.predictor.predict(box=box, multimask_output=False)
        np.testing.assert_array_equal(rle.decode(mask), ref[0])
    # ... and not the masks of the reference's bug (xyxy read as xywh, i.e. an enlarged box)
    enlarged = boxes[0].copy()
    enlarged[2:] += enlarged[:2]
    wrong, _, _ = sam.predictor.predict(box=enlarged, multimask_output=False)
    assert not np.array_equal(rle.decode(masks[0]), wrong[0])
    # capping the boxes per decoder call changes nothing
    assert sam.segment_boxes(image, boxes, max_boxes_per_call=2) == masks


def test_segment_boxes_second_image_and_bad_boxes(sam: SamAdapter, two_images: list[np.ndarray]) -> None:
    image = two_images[1]  # 260 high, 180 wide
    masks = sam.segment_boxes(image, [[10, 10, 170, 250], [-20, -20, 400, 400]])  # the second is clipped
    assert [m["size"] for m in masks] == [[260, 180], [260, 180]]
    assert sam.segment_boxes(image, np.zeros((0, 4))) == []
    with pytest.raises(ValueError, match="x2 >= x1"):
        sam.segment_boxes(image, [[50, 50, 10, 60]])
    with pytest.raises(ValueError, match="finite"):
        sam.segment_boxes(image, [[0, 0, float("nan"), 5]])


def test_generate_automatic_masks(sam: SamAdapter, two_images: list[np.ndarray]) -> None:
    for image in two_images:
        h, w = image.shape[:2]
        records = sam.generate(image, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
        assert records, "thresholds of 0 keep at least one mask of a random model"
        for rec in records:
            assert set(rec) == {"segmentation", "bbox", "area", "predicted_iou", "stability_score"}
            assert rec["segmentation"]["size"] == [h, w]
            assert rec["bbox"].dtype == np.float32
            np.testing.assert_array_equal(rec["bbox"], rle.to_bbox_xyxy(rec["segmentation"])[0])
            assert 0 <= rec["bbox"][0] < rec["bbox"][2] <= w and 0 <= rec["bbox"][1] < rec["bbox"][3] <= h
            assert rec["area"] == int(rle.area(rec["segmentation"])[0])


def test_load_from_a_pth_file(tiny_dir: Path, sam: SamAdapter) -> None:
    spec = ModelSpec(id=str(tiny_dir / "sam-vit-tiny" / "sam.pth"), family="sam", options={"model_type": "tiny"})
    other = load_adapter(spec)
    for (k, a), (_, b) in zip(sam.model.state_dict().items(), other.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
