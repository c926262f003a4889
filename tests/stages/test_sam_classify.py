"""``sam_classify``: the area filter, crops and mask sources by hand, and the stage on a tiny CLIP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.labels import read_category_file
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.sam_classify import (
    CLIP_MEAN_RGB,
    SAM_CLASSIFY_SCHEMA,
    SamClassifyStage,
    crop_bounds,
    image_masks,
    region_crop,
    select_by_area,
)
from grand_engine.testing import make_unit

W, H = 100, 80  # image area 8,000 px²: 1 % is 80 px²
LVIS = set(read_category_file("lvis_v1_categories.txt"))


def box_annotation(ann_id: int, box: list[float]) -> dict:
    """An annotation whose mask fills its (integer) box."""
    mask = np.zeros((H, W), dtype=bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = True
    return {
        "id": ann_id,
        "bbox": [float(v) for v in box],
        "area": float(mask.sum()),
        "predicted_iou": 0.9,
        "stability_score": 0.9,
        "point_coords": [],
        "crop_box": [0.0, 0.0, float(W), float(H)],
        "segmentation": rle.encode(mask),
    }


SA1B_ANNOTATIONS = [
    box_annotation(501, [0, 0, 60, 50]),  # 3,000 px²: classified
    box_annotation(502, [70, 10, 78, 20]),  # 8 × 10 = 80 px², exactly 1 %: not classified (strict >)
    box_annotation(503, [70, 40, 79, 50]),  # 9 × 10 = 90 px²: classified
    box_annotation(504, [10, 60, 12, 62]),  # 4 px²: not classified
]
GENERATED = [box_annotation(0, [20, 20, 90, 75]), box_annotation(1, [0, 0, 5, 5])]


def unit_of(images: dict[str, np.ndarray], sa1b: dict[str, list], generated: dict[str, list]) -> UnitInput:
    """A unit of ``images`` whose ``sa1b`` and ``sam_masks`` tables hold the given annotations per image."""

    def rows(per_image):
        return [
            {
                "image_id": i,
                "annotations": per_image.get(i, []),
                "num_annotations": len(per_image.get(i, [])),
                "image_width": W,
                "image_height": H,
            }
            for i in images
        ]

    return make_unit(images, inputs={"sa1b": rows(sa1b), "sam_masks": rows(generated)})


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    return {
        "sa": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "folder": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    }


@pytest.fixture(scope="module")
def unit(images) -> UnitInput:
    return unit_of(images, {"sa": SA1B_ANNOTATIONS}, {"sa": GENERATED[:1], "folder": GENERATED})


# -- hand-checked helpers ----------------------------------------------------------------------------------


def test_area_filter_is_strictly_above_one_percent_of_the_image():
    assert select_by_area(SA1B_ANNOTATIONS, W, H, 0.01) == [0, 2]
    assert select_by_area(SA1B_ANNOTATIONS, W, H, 0.0) == [0, 1, 2, 3]
    assert select_by_area(SA1B_ANNOTATIONS, W, H, 0.5) == []  # 3,000 < 4,000
    assert select_by_area([{"bbox": [math.nan, 0, 50, 50]}, {"bbox": None}], W, H, 0.0) == []
    assert select_by_area([], W, H, 0.01) == []


def test_crop_bounds():
    assert crop_bounds([10.2, 20.7, 30.1, 40.0], W, H) == (10, 20, 31, 40)
    # ×2 about the centre (20.15, 30.35): half sizes 19.9 and 19.3 → [0.25, 11.05, 40.05, 49.65] rounded outwards
    assert crop_bounds([10.2, 20.7, 30.1, 40.0], W, H, 2.0) == (0, 11, 41, 50)
    assert crop_bounds([-20, -5, 200, 300], W, H) == (0, 0, W, H)
    assert crop_bounds([W, H, W, H], W, H) == (W - 1, H - 1, W, H)  # a point on the far corner: one pixel
    assert crop_bounds([30, 40, 10, 20], W, H) == (10, 20, 30, 40)  # corners ordered


def test_region_crop_fills_outside_the_mask():
    pixels = np.full((H, W, 3), 255, dtype=np.uint8)
    ann = box_annotation(1, [10, 10, 30, 20])
    mask = np.zeros((H, W), dtype=bool)
    mask[10:20, 10:20] = True  # only the left half of the box
    ann["segmentation"] = rle.encode(mask)
    crop = region_crop(pixels, ann)
    assert crop.shape == (10, 20, 3) and (crop == 255).all()
    filled = region_crop(pixels, ann, mask_outside=True)
    assert (filled[:, :10] == 255).all()
    assert (filled[:, 10:] == np.array(CLIP_MEAN_RGB, dtype=np.uint8)).all()


def test_masks_come_from_sa1b_else_from_sam_masks(unit):
    masks, source = image_masks(unit, "sa")
    assert source == "sa1b" and [m["id"] for m in masks] == [501, 502, 503, 504]  # sam_masks row ignored
    masks, source = image_masks(unit, "folder")
    assert source == "sam_masks" and [m["id"] for m in masks] == [0, 1]


def test_reference_defaults_and_checks():
    stage = SamClassifyStage.configure({})
    assert (stage.min_area_fraction, stage.threshold, stage.vocabulary_file) == (0.01, 0.1, "lvis_v1_categories.txt")
    assert SamClassifyStage.requires == ("images", "sa1b", "sam_masks")
    with pytest.raises(ValueError, match="crop_scale"):
        SamClassifyStage.configure({"crop_scale": 0})


# -- tiny CLIP ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage(tiny_dir):
    st = SamClassifyStage.configure(
        {"threshold": 0.0}, models={"clip": ModelSpec(id=f"local-dir:{tiny_dir / 'clip-vit'}", family="clip")}
    )
    st.setup()
    return st


def test_stage_classifies_the_masks_above_one_percent(stage, unit):
    result = stage.process(unit)
    assert result.errors == []
    assert result.table.schema.equals(SAM_CLASSIFY_SCHEMA, check_metadata=True)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert rows["sa"]["annotation_ids"] == [501, 503]
    assert rows["sa"]["boxes"] == [[0, 0, 60, 50], [70, 40, 79, 50]]
    assert rows["folder"]["annotation_ids"] == [0]  # the 5 × 5 generated mask is below 1 %
    assert rows["folder"]["boxes"] == [[20, 20, 90, 75]]
    for row in rows.values():
        assert set(row["labels"]) <= LVIS  # raw LVIS entries
        assert all(0 < s <= 1 for s in row["scores"])


def test_threshold_is_strict(stage, unit):
    base = {r["image_id"]: r for r in stage.process(unit).table.to_pylist()}
    low = min(base["sa"]["scores"])
    try:
        stage.threshold = low
        again = {r["image_id"]: r for r in stage.process(unit).table.to_pylist()}
    finally:
        stage.threshold = 0.0
    assert min(base["sa"]["scores"]) not in again["sa"]["scores"]
    assert again["sa"]["annotation_ids"] == [
        a for a, s in zip(base["sa"]["annotation_ids"], base["sa"]["scores"], strict=True) if s > low
    ]


def test_masked_and_enlarged_crops_classify_the_same_masks(stage, unit):
    try:
        stage.mask_outside, stage.crop_scale = True, 1.5
        rows = {r["image_id"]: r for r in stage.process(unit).table.to_pylist()}
    finally:
        stage.mask_outside, stage.crop_scale = False, 1.0
    assert rows["sa"]["annotation_ids"] == [501, 503] and rows["folder"]["annotation_ids"] == [0]
