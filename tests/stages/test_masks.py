"""``masks`` (spec §7) on a hand-built 64×48 image: SA-1B match, detector mask and SAM prompt each the right answer.

Boxes and IoUs (continuous convention), worked out by hand:

* object 0  [0, 0, 32, 24] (area 768):  SA-1B A [0, 0, 30, 24] → 720/768 = 0.9375 (best);
  SA-1B B [0, 0, 32, 12] → 384/768 = 0.5  ⇒ mask A, bbox becomes [0, 0, 30, 24], source sa1b.
* object 1  [40, 0, 64, 20] (area 480): SA-1B C [40, 0, 64, 12] → 288/480 = 0.6 < 0.65;
  detector D [40, 0, 62, 20] → 440/480 = 0.9167  ⇒ detector mask, bbox becomes [40, 0, 62, 20].
* floating 2 [10, 30, 50, 46] (area 640): overlaps no SA-1B or detector box  ⇒ SAM with its own xyxy box
  as the prompt, bbox unchanged.
* boundary: object [0, 0, 20, 10] vs pool box [0, 0, 13, 10] → 130/200 = 0.65 exactly, which matches (>=).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.models.sam import box_prompts
from grand_engine.schema import BOX, RLE, table_schema
from grand_engine.stages.masks import MASKS_SCHEMA, MaskPool, Masks, assign_masks
from grand_engine.stages.sa1b import ANNOTATION
from grand_engine.testing import make_unit

W, H = 64, 48


def _box_mask(x1, y1, x2, y2, size=(H, W)) -> dict:
    m = np.zeros(size, dtype=np.uint8)
    m[y1:y2, x1:x2] = 1
    return rle.encode(m)


def _obj(oid, bbox, labels=("thing",)):
    return {
        "id": oid,
        "bbox": [float(v) for v in bbox],
        "labels": list(labels),
        "qualifiers": [""] * len(labels),
        "label": None,
        "score": 0.5,
        "sources": ["detect_lvis"],
        "attributes": [],
        "depth": None,
        "depth_note": None,
        "segmentation": None,
        "segmentation_source": None,
    }


def _level2(image_id="img", objects=None, floating=None):
    return {
        "image_id": image_id,
        "width": W,
        "height": H,
        "objects": objects if objects is not None else [_obj(0, [0, 0, 32, 24]), _obj(1, [40, 0, 64, 20])],
        "floating_objects": floating if floating is not None else [_obj(2, [10, 30, 50, 46])],
        "floating_attributes": [],
        "landmark": None,
        "affordances": [],
        "relationships": [],
        "captions": [],
    }


def _ann(aid, box):
    return {
        "id": aid,
        "bbox": [float(v) for v in box],
        "area": float((box[2] - box[0]) * (box[3] - box[1])),
        "predicted_iou": 0.9,
        "stability_score": 0.9,
        "point_coords": [],
        "crop_box": [0.0, 0.0, float(W), float(H)],
        "segmentation": _box_mask(*box),
    }


DETECTOR_SCHEMA = table_schema(("boxes", pa.list_(BOX)), ("scores", pa.list_(pa.float32())), ("masks", pa.list_(RLE)))


def _unit(level2_rows, anns, detector_rows=None, image=None):
    ids = [r["image_id"] for r in level2_rows]
    inputs = {
        "level2": level2_rows,
        "sa1b": [{"image_id": i, "annotations": anns} for i in ids],
        "sam_masks": [{"image_id": i, "annotations": []} for i in ids],
    }
    if detector_rows is not None:  # a side table of no registered stage: built with its own schema
        inputs["det"] = pa.Table.from_pylist(detector_rows, schema=DETECTOR_SCHEMA)
    pixels = image if image is not None else np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return make_unit(dict.fromkeys(ids, pixels), inputs=inputs)


SA1B = [_ann(10, [0, 0, 32, 12]), _ann(11, [0, 0, 30, 24]), _ann(12, [40, 0, 64, 12])]
DETECTOR = [
    {"image_id": "img", "boxes": [[40.0, 0.0, 62.0, 20.0]], "scores": [0.9], "masks": [_box_mask(40, 0, 62, 20)]}
]

NO_DETECTIONS = [{"image_id": "img", "boxes": [], "scores": [], "masks": []}]


@pytest.fixture(scope="module")
def stage(tiny_dir):
    st = Masks.configure(
        {"detector_mask_tables": ["det"], "max_boxes_per_call": 2},
        models={"sam": ModelSpec(id=str(tiny_dir / "sam-vit-tiny"), family="sam")},
    )
    st.setup()
    return st


def test_each_source_is_the_right_answer(stage):
    unit = _unit([_level2()], SA1B, DETECTOR)
    result = stage.process(unit)
    assert result.errors == []
    assert result.table.schema.equals(MASKS_SCHEMA, check_metadata=False)
    masks = result.table.to_pylist()[0]["masks"]
    assert [m["object_id"] for m in masks] == [0, 1, 2]
    assert [m["segmentation_source"] for m in masks] == ["sa1b", "detector", "sam"]
    assert [m["bbox"] for m in masks] == [[0, 0, 30, 24], [40, 0, 62, 20], [10, 30, 50, 46]]
    assert masks[0]["segmentation"] == SA1B[1]["segmentation"]  # annotation A, not B
    assert masks[1]["segmentation"] == DETECTOR[0]["masks"][0]
    assert masks[0]["match_iou"] == pytest.approx(0.9375) and masks[1]["match_iou"] == pytest.approx(440 / 480)
    assert masks[2]["match_iou"] is None and masks[2]["segmentation"]["size"] == [H, W]


def test_without_detector_tables_the_detector_case_falls_to_sam(tiny_dir):
    st = Masks.configure({}, models={"sam": ModelSpec(id=str(tiny_dir / "sam-vit-tiny"), family="sam")})
    st.setup()
    assert st.inputs() == ("images", "level2", "sa1b", "sam_masks")
    masks = st.process(_unit([_level2()], SA1B)).table.to_pylist()[0]["masks"]
    assert [m["segmentation_source"] for m in masks] == ["sa1b", "sam", "sam"]
    assert masks[1]["bbox"] == [40, 0, 64, 20]  # the object's own box


def test_sam_prompt_is_the_objects_xyxy_box_in_bounded_batches(stage):
    recorded: list[np.ndarray] = []
    predictor = stage.sam.predictor
    original = predictor.predict_torch

    def spy(*args, **kwargs):
        recorded.append(kwargs["boxes"].cpu().numpy().copy())
        return original(*args, **kwargs)

    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    floating = [_obj(2 + i, [5 + i, 26, 20 + 9 * i, 40 + i]) for i in range(5)]  # x1 > 0: xywh would differ
    level2 = _level2(objects=[], floating=floating)
    predictor.predict_torch = spy
    try:
        masks = stage.process(_unit([level2], [], NO_DETECTIONS, image=image)).table.to_pylist()[0]["masks"]
    finally:
        predictor.predict_torch = original
    boxes = np.array([o["bbox"] for o in floating], dtype=np.float32)
    assert [len(r) for r in recorded] == [2, 2, 1]  # max_boxes_per_call = 2
    np.testing.assert_allclose(np.concatenate(recorded), box_prompts(boxes, (H, W), stage.sam.img_size), rtol=1e-6)
    # the masks are segment-anything's own answer for `box=xyxy` (its documented numpy API) ...
    predictor.set_image(image)
    for box, m in zip(boxes, masks, strict=True):
        ref, _, _ = predictor.predict(box=box, multimask_output=False)
        np.testing.assert_array_equal(rle.decode(m["segmentation"]), ref[0])
        assert m["bbox"] == box.tolist() and m["segmentation_source"] == "sam"
    # ... and not the reference's reading of xyxy as xywh (an enlarged prompt)
    enlarged = boxes[4].copy()
    enlarged[2:] += enlarged[:2]
    with torch.inference_mode():
        wrong, _, _ = predictor.predict(box=enlarged, multimask_output=False)
    assert not np.array_equal(rle.decode(masks[4]["segmentation"]), wrong[0])


def test_iou_threshold_boundary_and_first_on_ties():
    pool = MaskPool.empty()
    pool.add([[0, 0, 13, 10], [0, 0, 13, 10]], [_box_mask(0, 0, 13, 10)] * 2, "sa1b", "t", [H, W])
    entries = [_obj(0, [0, 0, 20, 10])]
    out = assign_masks(entries, W, H, pool, MaskPool.empty(), None, match_iou=0.65)
    assert out[0]["segmentation_source"] == "sa1b" and out[0]["match_iou"] == pytest.approx(0.65)
    assert pool.best(np.array([[0, 0, 20, 10]], dtype=float), 0.65) == [(0, pytest.approx(0.65))]
    # just below the threshold nothing matches, and without a SAM model that is an error naming the object
    with pytest.raises(ValueError, match=r"object ids \[0\] match no region or detector mask"):
        assign_masks(entries, W, H, pool, MaskPool.empty(), None, match_iou=0.66)


def test_pixel_convention_matches_masks_as_the_reference():
    # object [0, 0, 19, 9] against the SA-1B box [0, 0, 12, 9]: pixel-inclusive IoU 13·10 / 20·10 = .65 (a match,
    # as in the reference); continuous IoU 12·9 / 19·9 = .632 (no match)
    pool = MaskPool.empty()
    pool.add([[0, 0, 12, 9]], [_box_mask(0, 0, 12, 9)], "sa1b", "t", [H, W])
    entries = [_obj(0, [0, 0, 19, 9])]
    out = assign_masks(entries, W, H, pool, MaskPool.empty(), None, match_iou=0.65, iou_convention="pixel")
    assert out[0]["segmentation_source"] == "sa1b" and out[0]["bbox"] == [0, 0, 12, 9]
    assert out[0]["match_iou"] == 0.65
    with pytest.raises(ValueError, match=r"object ids \[0\] match no region or detector mask"):
        assign_masks(entries, W, H, pool, MaskPool.empty(), None, match_iou=0.65)
    with pytest.raises(ValueError, match="masks: iou_convention must be one of continuous, pixel"):
        Masks.configure({"iou_convention": "+1"})


def test_a_stuff_object_keeps_its_own_mask():
    """An object the ``ovss`` stage added (CASS stuff region) is its mask: no SA-1B match, no SAM call."""
    stuff_mask = np.zeros((H, W), dtype=bool)
    stuff_mask[:3] = True
    stuff = {"id": 0, "bbox": [0.0, 0.0, float(W), 3.0], "segmentation": rle.encode(stuff_mask)}
    stuff["segmentation_source"] = "ovss"
    pool = MaskPool.empty()
    pool.add([[0, 0, W, 3]], [rle.encode(stuff_mask)], "sa1b", "t", [H, W])  # would match its box exactly

    def no_sam(boxes):
        raise AssertionError("SAM must not run")

    (out,) = assign_masks([stuff], W, H, pool, MaskPool.empty(), no_sam)
    assert out["segmentation_source"] == "ovss" and out["match_iou"] is None
    assert rle.decode(out["segmentation"]).sum() == stuff_mask.sum()


def test_sam_masks_table_is_a_region_pool_labelled_sam(stage):
    level2 = _level2(objects=[_obj(0, [0, 0, 32, 24])], floating=[])
    unit = _unit([level2], [], NO_DETECTIONS)
    auto = table_schema(("annotations", pa.list_(ANNOTATION)))
    unit.inputs["sam_masks"] = pa.Table.from_pylist(
        [{"image_id": "img", "annotations": [_ann(5, [0, 0, 31, 24])]}], schema=auto
    )
    masks = stage.process(unit).table.to_pylist()[0]["masks"]
    assert masks[0]["segmentation_source"] == "sam" and masks[0]["bbox"] == [0, 0, 31, 24]
    assert masks[0]["match_iou"] == pytest.approx(31 / 32)


def test_bad_inputs_become_error_rows(stage):
    wrong_size = [{"image_id": "img", "boxes": [[40.0, 0.0, 62.0, 20.0]], "scores": [0.9],
                   "masks": [_box_mask(40, 0, 62, 20, size=(H + 1, W))]}]  # fmt: skip
    result = stage.process(_unit([_level2()], SA1B, wrong_size))
    assert [(e.image_id, e.error_type) for e in result.errors] == [("img", "ValueError")]
    assert "det.masks[0]: mask size [49, 64]" in result.errors[0].message

    misaligned = [{"image_id": "img", "boxes": [[40.0, 0.0, 62.0, 20.0]], "scores": [0.9], "masks": []}]
    result = stage.process(_unit([_level2()], SA1B, misaligned))
    assert "1 boxes but 0 masks" in result.errors[0].message

    no_box = _level2(objects=[{**_obj(0, [0, 0, 1, 1]), "bbox": None}], floating=[])
    good = _level2(image_id="ok")
    result = stage.process(_unit([no_box, good], SA1B, [*DETECTOR, {**DETECTOR[0], "image_id": "ok"}]))
    assert result.table.column("image_id").to_pylist() == ["ok"]
    assert "object id 0 has no usable bbox" in result.errors[0].message


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="match_iou"):
        Masks.configure({"match_iou": 1.5})
    with pytest.raises(ValueError, match="max_boxes_per_call"):
        Masks.configure({"max_boxes_per_call": 0})
    with pytest.raises(ValueError, match="region_tables"):
        Masks.configure({"region_tables": {"sa1b": "SAM"}})
