"""``mode: pooled`` of the crop classifiers (sam_classify, label_assign) on the tiny SigLIP 2: a region covering the
whole image classifies exactly as its crop (the whole image) does in ``mode: crops``, and every other region as its
pooled embedding against the texts, computed here directly."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.labels import normalise_label
from grand_engine.models.clip import softmax_scores
from grand_engine.stages.label_assign import LabelAssign
from grand_engine.stages.sam_classify import SamClassifyStage, crop_bounds
from grand_engine.testing import make_unit, run_stage

W, H = 100, 80
PIXELS = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _annotation(ann_id: int, box: list[int]) -> dict:
    mask = np.zeros((H, W), dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
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


ANNOTATIONS = [_annotation(1, [0, 0, W, H]), _annotation(2, [0, 0, 60, 50]), _annotation(3, [10, 60, 12, 62])]


def _sam_unit():
    rows = [{"image_id": "a", "annotations": ANNOTATIONS, "num_annotations": 3, "image_width": W, "image_height": H}]
    empty = [{"image_id": "a", "annotations": [], "num_annotations": 0, "image_width": W, "image_height": H}]
    return make_unit({"a": PIXELS}, inputs={"sa1b": rows, "sam_masks": empty})


@pytest.fixture(scope="module")
def siglip_spec(tiny_dir) -> ModelSpec:
    return ModelSpec(id=str(tiny_dir / "siglip2"), family="hf_clip", dtype="float32")


def _sam_stage(spec: ModelSpec, **params) -> SamClassifyStage:
    return SamClassifyStage.configure({"threshold": 0.0, **params}, models={"clip": spec})


def test_sam_classify_pooled_matches_crops_on_the_whole_image_and_pools_the_rest(siglip_spec) -> None:
    unit = _sam_unit()
    crops = run_stage(_sam_stage(siglip_spec), unit).table.to_pylist()[0]
    stage = _sam_stage(siglip_spec, mode="pooled")
    pooled = run_stage(stage, unit).table.to_pylist()[0]
    assert pooled["annotation_ids"] == crops["annotation_ids"] == [1, 2]  # 4 px² is under 1 %
    assert pooled["labels"][0] == crops["labels"][0]
    assert pooled["scores"][0] == pytest.approx(crops["scores"][0], abs=1e-4)
    region = crop_bounds(ANNOTATIONS[1]["bbox"], W, H)
    embeds = stage.clip.encode_regions([PIXELS], [[np.asarray(region, dtype=np.float64)]])[0]
    probs = softmax_scores(embeds, stage.text_embeds)[0]
    assert pooled["labels"][1] == stage.vocabulary[int(probs.argmax())]
    assert pooled["scores"][1] == pytest.approx(float(probs.max()), abs=1e-5)
    assert pooled["boxes"] == crops["boxes"]
    # a mask that fills its box pools the same cells as the box
    masked = run_stage(_sam_stage(siglip_spec, mode="pooled", mask_outside=True), unit).table.to_pylist()[0]
    assert masked["labels"] == pooled["labels"]
    assert masked["scores"] == pytest.approx(pooled["scores"], abs=1e-5)


def test_classifier_modes_are_checked() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        SamClassifyStage.configure({"mode": "dense"})
    with pytest.raises(ValueError, match="mode must be one of"):
        LabelAssign.configure({"mode": "dense"})


def _obj(oid: int, bbox: list[float], labels: list[str]) -> dict:
    return {"id": oid, "bbox": bbox, "labels": labels, "qualifiers": [""] * len(labels), "attributes": []}


def _link_row() -> dict:
    return {
        "image_id": "a",
        "width": W,
        "height": H,
        "objects": [_obj(0, [0, 0, W, H], ["person", "man"]), _obj(1, [50, 0, 100, 40], ["sandal", "shoe"])],
        "floating_objects": [_obj(2, [40, 40, 40, 60], ["pole", "post"])],  # zero width: skipped in both modes
        "floating_attributes": [],
        "affordances": [],
        "relationships": [],
        "captions": ["a", "b"],
    }


def test_label_assign_pooled_matches_crops_on_the_whole_image_and_pools_the_rest(siglip_spec) -> None:
    unit = make_unit({"a": PIXELS}, inputs={"link_phrases": [_link_row()]})
    crops = run_stage(LabelAssign.configure({}, models={"clip": siglip_spec}), unit).table.to_pylist()[0]
    stage = LabelAssign.configure({"mode": "pooled"}, models={"clip": siglip_spec})
    pooled = run_stage(stage, unit).table.to_pylist()[0]["assignments"]
    assert [a["object_id"] for a in pooled] == [a["object_id"] for a in crops["assignments"]] == [0, 1]
    assert pooled[0]["label"] == crops["assignments"][0]["label"]
    assert pooled[0]["score"] == pytest.approx(crops["assignments"][0]["score"], abs=1e-4)
    embeds = stage.clip.encode_regions([PIXELS], [[np.array([50.0, 0.0, 100.0, 40.0])]])[0]
    texts = [normalise_label(n).display for n in ("sandal", "shoe")]
    probs = softmax_scores(embeds, stage.clip.encode_texts(texts))[0]
    assert pooled[1]["label"] == ["sandal", "shoe"][int(probs.argmax())]
    assert pooled[1]["score"] == pytest.approx(float(probs.max()), abs=1e-5)
