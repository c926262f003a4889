"""``region_attributes`` (spec step 15): object selection, answer cleaning, and both model modes (tiny models).

Image 1000×800 → 2 % of its area is 16,000 px²: object 0 ``[0,0,100,160]`` (16,000, included: ">= 2 %"),
object 1 ``[100,100,600,500]`` (200,000, included), object 2 ``[0,0,100,159]`` (15,900, excluded). The floating
object is large but floating objects are never described.
"""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.resources import prompt_file
from grand_engine.stages.region_attributes import (
    REGION_ATTRIBUTES_SCHEMA,
    RegionAttributes,
    clean_description,
    crop_box,
    large_objects,
)
from grand_engine.testing import make_unit

PIXELS = (np.random.default_rng(5).random((800, 1000, 3)) * 255).astype(np.uint8)


def _obj(oid, bbox):
    return {"id": oid, "bbox": list(bbox), "labels": ["thing"], "qualifiers": [""], "sources": ["detect_lvis"],
            "attributes": [], "score": 0.5}  # fmt: skip


def _row(image_id="img0"):
    return {
        "image_id": image_id,
        "width": 1000,
        "height": 800,
        "objects": [_obj(0, [0, 0, 100, 160]), _obj(1, [100, 100, 600, 500]), _obj(2, [0, 0, 100, 159])],
        "floating_objects": [_obj(3, [0, 0, 1000, 800])],
        "floating_attributes": [],
        "affordances": [],
        "relationships": [],
        "captions": ["a", "b"],
    }


def _unit(rows):
    return make_unit({r["image_id"]: PIXELS for r in rows}, inputs={"link_phrases": rows})


def test_clean_description():
    assert clean_description("ASSISTANT: a red car<loc_12><loc_40>") == "a red car"
    assert clean_description("### Assistant:  The region shows a dog.") == "The region shows a dog."
    assert clean_description("USER: what is it? GPT:  a   tall tree") == "a tall tree"
    assert clean_description("a sign reading: STOP") == "a sign reading: STOP"  # not a role prefix: kept whole
    assert clean_description("<s> </s><loc_3>") == ""
    assert clean_description(None) == ""


def test_large_objects_threshold_is_inclusive():
    assert [o["id"] for o in large_objects(_row(), 0.02)] == [0, 1]
    assert [o["id"] for o in large_objects(_row(), 0.0)] == [0, 1, 2]
    with pytest.raises(ValueError, match="no valid image size"):
        large_objects({**_row(), "width": None}, 0.02)


def test_crop_box_rounds_outwards_and_clamps():
    assert crop_box(PIXELS, [10.2, 5.7, 20.1, 9.0]).shape == (4, 11, 3)  # rows 5..8, cols 10..20
    assert crop_box(PIXELS, [990, 790, 1200, 900]).shape == (10, 10, 3)
    assert crop_box(PIXELS, [5, 5, 5, 9]) is None
    assert crop_box(PIXELS, [1200, 0, 1300, 10]) is None


def test_region_mode_with_florence(tiny_dir):
    stage = RegionAttributes.configure(
        {"max_new_tokens": 12},
        models={"vlm": ModelSpec(id=str(tiny_dir / "florence2"), family="vlm", dtype="float32")},
    )
    stage.setup()
    assert stage.use_region
    result = stage.process(_unit([_row()]))
    assert result.errors == []
    assert result.table.schema.equals(REGION_ATTRIBUTES_SCHEMA, check_metadata=False)
    answers = stage.vlm.region_description(PIXELS, [[0, 0, 100, 160], [100, 100, 600, 500]], max_new_tokens=12)
    assert all("<loc_" in a for a in answers)  # the tiny model's answers carry location tokens to clean
    expected = [
        {"object_id": oid, "description": clean_description(a)}
        for oid, a in zip([0, 1], answers, strict=True)
        if clean_description(a)
    ]
    assert expected and all("<loc_" not in e["description"] for e in expected)
    assert result.table.to_pylist() == [{"image_id": "img0", "descriptions": expected}]


def test_crop_mode_with_llava_and_bad_row(tiny_dir):
    spec = ModelSpec(id=str(tiny_dir / "llava"), family="vlm", dtype="float32")
    with pytest.raises(ValueError, match="needs a Florence-2 checkpoint"):
        RegionAttributes.configure({"mode": "region"}, models={"vlm": spec}).setup()
    stage = RegionAttributes.configure({"max_new_tokens": 4}, models={"vlm": spec}, resources={"batch_size": 4})
    stage.setup()
    assert not stage.use_region
    assert stage.prompt_text == prompt_file("region_attributes.txt").read_text().strip()
    bad = _row("img1")
    bad["objects"][1]["bbox"] = None
    result = stage.process(_unit([_row(), bad]))
    assert [(e.image_id, e.error_type) for e in result.errors] == [("img1", "ValueError")]
    crops = [crop_box(PIXELS, [0, 0, 100, 160]), crop_box(PIXELS, [100, 100, 600, 500])]
    answers = [g.text for g in stage.vlm.generate(crops, stage.prompt_text, max_new_tokens=4)]
    expected = [
        {"object_id": oid, "description": clean_description(a)}
        for oid, a in zip([0, 1], answers, strict=True)
        if clean_description(a)
    ]
    assert len(expected) == 2
    assert result.table.to_pylist() == [{"image_id": "img0", "descriptions": expected}]


def test_parameters():
    assert RegionAttributes.configure().min_area_fraction == 0.02
    with pytest.raises(ValueError, match="mode must be"):
        RegionAttributes.configure({"mode": "boxes"})
