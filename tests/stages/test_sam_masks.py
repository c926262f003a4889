"""``sam_masks``: which images SAM runs on, the ``sa1b`` table format, lazy loading, on the tiny SAM."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.models.base import ModelNotFoundError
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.sa1b import SA1BStage
from grand_engine.stages.sam_masks import SAM_MASKS_SCHEMA, SamMasksStage, has_sa1b_masks
from grand_engine.testing import make_unit

# segment-anything defaults are parameters; the tiny random SAM needs a small grid and no quality filters
TINY = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def sa1b_row(image_id: str, width: int, height: int, with_mask: bool) -> dict:
    annotations = []
    if with_mask:
        mask = np.zeros((height, width), dtype=bool)
        mask[:5, :5] = True
        annotations.append(
            {
                "id": 77,
                "bbox": [0.0, 0.0, 5.0, 5.0],
                "area": 25.0,
                "predicted_iou": 0.9,
                "stability_score": 0.95,
                "point_coords": [[1.0, 1.0]],
                "crop_box": [0.0, 0.0, float(width), float(height)],
                "segmentation": rle.encode(mask),
            }
        )
    return {
        "image_id": image_id,
        "annotations": annotations,
        "num_annotations": len(annotations),
        "image_width": width,
        "image_height": height,
    }


def unit_of(images: dict[str, np.ndarray], with_sa1b: set[str]) -> tuple[UnitInput, list[str]]:
    """A unit of ``images`` (SA-1B annotations for those in ``with_sa1b``) that records which images were decoded."""
    sa1b = [sa1b_row(i, im.shape[1], im.shape[0], i in with_sa1b) for i, im in images.items()]
    unit = make_unit(images, inputs={"sa1b": sa1b})
    decoded: list[str] = []
    load = unit.pixels

    def pixels(image_id: str) -> np.ndarray:
        decoded.append(image_id)
        return load(image_id)

    unit.pixels = pixels  # type: ignore[method-assign]
    return unit, decoded


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {
        "sa": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "folder": rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
    }


@pytest.fixture(scope="module")
def sam_spec(tiny_dir):
    return {"sam": ModelSpec(id=str(tiny_dir / "sam-vit-tiny"), family="sam")}


def test_table_is_the_sa1b_format():
    assert SAM_MASKS_SCHEMA.equals(SA1BStage.schema)


def test_has_sa1b_masks():
    assert has_sa1b_masks(sa1b_row("x", 10, 10, True))
    assert not has_sa1b_masks(sa1b_row("x", 10, 10, False))


def test_sa1b_images_are_skipped_and_the_model_is_never_loaded(sam_spec, images):
    stage = SamMasksStage.configure(TINY, models=sam_spec)
    stage.setup()
    unit, decoded = unit_of({"sa": images["sa"]}, with_sa1b={"sa"})
    result = stage.process(unit)
    assert result.errors == []
    assert result.table.to_pylist() == [
        {"image_id": "sa", "annotations": [], "num_annotations": 0, "image_width": 64, "image_height": 48}
    ]
    assert decoded == [] and stage.sam is None  # neither the image nor the model was touched


def test_folder_images_get_sam_masks(sam_spec, images):
    stage = SamMasksStage.configure(TINY, models=sam_spec)
    stage.setup()
    unit, decoded = unit_of(images, with_sa1b={"sa"})
    result = stage.process(unit)
    assert result.errors == []
    assert result.table.schema.equals(SAM_MASKS_SCHEMA, check_metadata=True)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert decoded == ["folder"]
    assert rows["sa"]["num_annotations"] == 0
    folder = rows["folder"]
    assert (folder["image_width"], folder["image_height"]) == (30, 40)
    assert folder["num_annotations"] == len(folder["annotations"]) > 0
    for k, ann in enumerate(folder["annotations"]):
        assert ann["id"] == k
        assert ann["segmentation"]["size"] == [40, 30]
        assert ann["area"] == float(rle.area(ann["segmentation"])[0]) > 0
        assert ann["bbox"] == pytest.approx(rle.to_bbox_xyxy(ann["segmentation"])[0].tolist())
        x1, y1, x2, y2 = ann["bbox"]
        assert 0 <= x1 < x2 <= 30 and 0 <= y1 < y2 <= 40
        assert ann["crop_box"] == [0, 0, 30, 40] and ann["point_coords"] == []
    # the generated annotations pass the sa1b stage's own checks
    assert rle.validate_many([a["segmentation"] for a in folder["annotations"]], 40, 30).tolist() == [
        a["area"] for a in folder["annotations"]
    ]


def test_only_without_sa1b_false_runs_every_image(sam_spec, images):
    stage = SamMasksStage.configure({**TINY, "only_without_sa1b": False}, models=sam_spec)
    stage.setup()
    unit, decoded = unit_of({"sa": images["sa"]}, with_sa1b={"sa"})
    (row,) = stage.process(unit).table.to_pylist()
    assert decoded == ["sa"] and row["num_annotations"] > 0
    assert all(a["segmentation"]["size"] == [48, 64] for a in row["annotations"])


def test_missing_checkpoint_fails_at_setup(tmp_path):
    stage = SamMasksStage.configure({}, models={"sam": ModelSpec(id=str(tmp_path / "nope.pth"), family="sam")})
    with pytest.raises(ModelNotFoundError, match="nope.pth"):
        stage.setup()


def test_without_a_sam_model_only_images_needing_it_fail(images):
    stage = SamMasksStage.configure({})
    stage.setup()
    unit, decoded = unit_of(images, with_sa1b={"sa"})
    result = stage.process(unit)
    assert [r["image_id"] for r in result.table.to_pylist()] == ["sa"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("folder", "ValueError")]
    assert "no model in its 'sam' slot" in result.errors[0].message and decoded == []
