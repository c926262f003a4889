"""``label_assign`` (spec step 16) with a tiny EVA02-CLIP-style open_clip model: wiring and ``label ∈ labels``."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.stages.label_assign import LABEL_ASSIGN_SCHEMA, LabelAssign, candidates
from grand_engine.stages.region_attributes import crop_box
from grand_engine.testing import make_unit

PIXELS = (np.random.default_rng(9).random((200, 300, 3)) * 255).astype(np.uint8)


def _obj(oid, bbox, labels, qualifiers=None):
    return {"id": oid, "bbox": list(bbox), "labels": list(labels),
            "qualifiers": list(qualifiers) if qualifiers else [""] * len(labels), "attributes": []}  # fmt: skip


def _row(image_id):
    return {
        "image_id": image_id,
        "width": 300,
        "height": 200,
        "objects": [
            _obj(0, [0, 0, 50, 50], ["cup"]),  # one label: no entry
            _obj(1, [10, 20, 120, 180], ["person", "man", "boy"]),
            _obj(2, [150, 0, 300, 100], ["sandal", "shoe"], ["type of shoe", ""]),
        ],
        "floating_objects": [
            _obj(3, [200, 120, 290, 190], ["dog", "puppy", "dog"]),
            _obj(4, [40, 40, 40, 90], ["pole", "post"]),  # zero-width box: empty crop, skipped
        ],
        "floating_attributes": [],
        "affordances": [],
        "relationships": [],
        "captions": ["a", "b"],
    }


def _unit(rows, broken=()):
    """A unit of ``rows`` (``link_phrases`` rows) on ``PIXELS``; the images in ``broken`` fail to decode."""
    images = {r["image_id"]: None if r["image_id"] in broken else PIXELS for r in rows}
    return make_unit(images, inputs={"link_phrases": rows})


def test_candidates():
    obj = _obj(0, [0, 0, 1, 1], ["sandal", "shoe", "sandal"], ["type of shoe", "", "other"])
    assert candidates(obj) == (["sandal", "shoe"], ["sandal (type of shoe)", "shoe"])
    assert candidates(obj, use_qualifiers=False) == (["sandal", "shoe"], ["sandal", "shoe"])
    assert candidates({"labels": None}) == ([], [])


@pytest.fixture(scope="module")
def stage(tiny_dir):
    st = LabelAssign.configure(
        models={"clip": ModelSpec(id=f"local-dir:{tiny_dir / 'clip-eva02'}", family="clip", dtype="float32")},
        resources={"batch_size": 4},
    )
    st.setup()
    return st


def test_choice_is_clip_argmax_over_own_candidates(stage):
    result = stage.process(_unit([_row("img0")]))
    assert result.errors == []
    assert result.table.schema.equals(LABEL_ASSIGN_SCHEMA, check_metadata=False)
    entries = result.table.to_pylist()[0]["assignments"]
    assert [e["object_id"] for e in entries] == [1, 2, 3]
    row = _row("img0")
    by_id = {o["id"]: o for o in row["objects"] + row["floating_objects"]}
    for entry in entries:
        obj = by_id[entry["object_id"]]
        names, texts = candidates(obj)
        probs = stage.clip.classify_each([crop_box(PIXELS, obj["bbox"])], [texts])[0]
        assert entry["label"] == names[int(np.argmax(probs))]
        assert entry["label"] in obj["labels"]  # the invariant level2 relies on
        assert entry["score"] == pytest.approx(float(probs.max()), rel=1e-5)
        assert 1 / len(names) <= entry["score"] <= 1.0


def test_images_without_multi_label_objects_need_no_pixels(stage):
    single = _row("img1")
    single["objects"], single["floating_objects"] = [_obj(0, [0, 0, 10, 10], ["cup"])], []
    result = stage.process(_unit([single, _row("img2")], broken={"img1", "img2"}))
    assert result.table.to_pylist() == [{"image_id": "img1", "assignments": []}]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("img2", "OSError")]


def test_declarations():
    assert LabelAssign.requires == ("link_phrases",) and LabelAssign.model_slots == ("clip",)
    with pytest.raises(ValueError, match="'clip' slot"):
        LabelAssign.configure().setup()
