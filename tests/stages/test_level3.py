"""``level3`` on hand-built level-2, grounding, mask and verification rows.

Object 0's box [0, 0, 32, 24] is replaced by its SA-1B mask's box [0, 0, 30, 24]; object 1 keeps [40, 0, 64, 20]
(SAM); floating object 2's box becomes its detector box [10, 30, 50, 46]. The grounding details carry the
level-2 boxes; level 3 must rewrite them to the final ones.
"""

from __future__ import annotations

import copy

import pytest

from grand_engine.io import rle
from grand_engine.stages.level3 import LEVEL3_SCHEMA, Level3, merge_level3
from grand_engine.testing import make_unit
from grand_engine.validate import validate_annotation

W, H = 64, 48


def _obj(oid, bbox, labels):
    return {
        "id": oid,
        "bbox": [float(v) for v in bbox],
        "labels": list(labels),
        "qualifiers": [""] * len(labels),
        "label": labels[0],
        "score": 0.5,
        "sources": ["detect_lvis"],
        "attributes": [],
        "depth": 0.5,
        "depth_note": "mask",
        "segmentation": None,
        "segmentation_source": None,
    }


def _mask(x1, y1, x2, y2):
    import numpy as np

    m = np.zeros((H, W), dtype=np.uint8)
    m[y1:y2, x1:x2] = 1
    return rle.encode(m)


SHORT = "A man and a dog."
DENSE = "A man stands beside a small dog near a cup."


def level2_row(image_id="img"):
    return {
        "image_id": image_id,
        "width": W,
        "height": H,
        "objects": [_obj(0, [0, 0, 32, 24], ["person"]), _obj(1, [40, 0, 64, 20], ["dog"])],
        "floating_objects": [_obj(2, [10, 30, 52, 46], ["cup"])],
        "floating_attributes": [],
        "landmark": {"category": "indoor", "fine_category": "kitchen"},
        "affordances": [],
        "relationships": [{"phrase": "a man", "object_ids": [0]}],
        "captions": [SHORT, "a blank wall"],
    }


def _detail(caption, phrase, ids, boxes, match="exact"):
    start = caption.index(phrase)
    return {"phrase": phrase, "tokens_positive": [start, start + len(phrase)], "ids": ids, "bbox": boxes,
            "match": match}  # fmt: skip


def grounded_row(image_id="img"):
    old0, old1, old2 = [0.0, 0.0, 32.0, 24.0], [40.0, 0.0, 64.0, 20.0], [10.0, 30.0, 52.0, 46.0]
    return {
        "image_id": image_id,
        "short_captions": [
            {"caption": SHORT, "details": [_detail(SHORT, "A man", [0], [old0])]},
            {"caption": "a blank wall", "details": []},
        ],
        "dense_caption": {
            "caption": DENSE,
            "details": [
                _detail(DENSE, "A man", [0], [old0]),
                _detail(DENSE, "a small dog", [1], [old1], "noun"),
                _detail(DENSE, "a cup", [2, 0], [old2, old0], "lemma"),
            ],
        },
    }


def masks_row(image_id="img"):
    return {
        "image_id": image_id,
        "masks": [
            {"object_id": 0, "bbox": [0.0, 0.0, 30.0, 24.0], "segmentation": _mask(0, 0, 30, 24),
             "segmentation_source": "sa1b", "match_iou": 0.9375},
            {"object_id": 1, "bbox": [40.0, 0.0, 64.0, 20.0], "segmentation": _mask(41, 1, 60, 19),
             "segmentation_source": "sam", "match_iou": None},
            {"object_id": 2, "bbox": [10.0, 30.0, 50.0, 46.0], "segmentation": _mask(10, 30, 50, 46),
             "segmentation_source": "detector", "match_iou": 0.95},
        ],
    }  # fmt: skip


VERIFICATION_RECORD = {
    "status": "verified",
    "rounds": 0,
    "checklist": [{"item": "dog", "verdict": "confirmed", "evidence": "scene_graph_exact", "score": 1.0}],
    "items_checked": 1,
    "items_confirmed": 1,
    "hallucination_rate_before": 0.0,
    "hallucination_rate_after": 0.0,
}


def verify_row(image_id="img", caption=DENSE):
    return {"image_id": image_id, "caption": caption, "verification": VERIFICATION_RECORD}


def _unit(l2, gc, mk, vf):
    ids = [r["image_id"] for r in l2]
    return make_unit(ids, inputs={"level2": l2, "ground_captions": gc, "masks": mk, "verify": vf})


def test_merge_applies_masks_and_rewrites_detail_boxes():
    row = merge_level3(level2_row(), grounded_row(), masks_row()["masks"], verify_row())
    assert "captions" not in row
    objs = row["objects"] + row["floating_objects"]
    assert [o["bbox"] for o in objs] == [[0, 0, 30, 24], [40, 0, 64, 20], [10, 30, 50, 46]]
    assert [o["segmentation_source"] for o in objs] == ["sa1b", "sam", "detector"]
    assert all(o["segmentation"]["size"] == [H, W] for o in objs)
    dense = row["dense_caption"]
    assert dense["verification"] == VERIFICATION_RECORD
    assert [d["bbox"] for d in dense["details"]] == [
        [[0, 0, 30, 24]],
        [[40, 0, 64, 20]],
        [[10, 30, 50, 46], [0, 0, 30, 24]],
    ]
    assert row["short_captions"][0]["details"][0]["bbox"] == [[0, 0, 30, 24]]
    assert [s["caption"] for s in row["short_captions"]] == [SHORT, "a blank wall"]
    assert validate_annotation(row, 3) == []
    # the un-updated boxes would break the detail-box invariant: the check is real
    stale = copy.deepcopy(row)
    stale["dense_caption"]["details"] = grounded_row()["dense_caption"]["details"]
    assert any("differs from object 0's bbox" in p for p in validate_annotation(stale, 3))


def test_stage_rows_follow_the_schema_and_bad_inputs_become_error_rows():
    l2 = [level2_row("ok"), level2_row("nomask"), level2_row("extra"), level2_row("caption"), level2_row("span")]
    gc = [grounded_row(i) for i in ("ok", "nomask", "extra", "caption", "span")]
    gc[4]["dense_caption"]["details"][0]["tokens_positive"] = [1, 6]  # selects " man ", not "A man"
    mk = [masks_row(i) for i in ("ok", "nomask", "extra", "caption", "span")]
    mk[1]["masks"] = mk[1]["masks"][:2]
    mk[2]["masks"].append({**mk[2]["masks"][0], "object_id": 9})
    vf = [
        verify_row(i, "Another caption." if i == "caption" else DENSE)
        for i in ("ok", "nomask", "extra", "caption", "span")
    ]
    result = Level3.configure().process(_unit(l2, gc, mk, vf))
    assert result.table.schema.equals(LEVEL3_SCHEMA, check_metadata=False)
    assert result.table.column("image_id").to_pylist() == ["ok"]
    errors = {e.image_id: e.message for e in result.errors}
    assert set(errors) == {"nomask", "extra", "caption", "span"}
    assert "object id 2 has no entry in `masks`" in errors["nomask"]
    assert "object ids [9], which level2 does not have" in errors["extra"]
    assert "not the verified caption" in errors["caption"]
    assert "selects ' man '" in errors["span"]
    assert validate_annotation(result.table.to_pylist()[0], 3) == []


def test_duplicate_mask_and_unknown_detail_id_are_refused():
    masks = masks_row()["masks"]
    with pytest.raises(ValueError, match="two entries for object id 0"):
        merge_level3(level2_row(), grounded_row(), masks + [masks[0]], verify_row())
    grounded = grounded_row()
    grounded["dense_caption"]["details"][0]["ids"] = [5]
    with pytest.raises(ValueError, match=r"unknown object id\(s\) \[5\]"):
        merge_level3(level2_row(), grounded, masks, verify_row())
    bad_source = copy.deepcopy(masks)
    bad_source[1]["segmentation_source"] = "HQ_SAM"
    with pytest.raises(ValueError, match="segmentation_source 'HQ_SAM'"):
        merge_level3(level2_row(), grounded_row(), bad_source, verify_row())
