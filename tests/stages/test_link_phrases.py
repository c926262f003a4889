"""``link_phrases`` (spec step 14b) on a hand-built level-1 row and hand-built groundings.

IoUs used below (continuous convention, no +1), worked out by hand:

* man   [2,2,100,100]     vs object 0 [0,0,100,100]:   98·98 / 100·100     = 0.9604
* man   [0,0,100,98]      vs object 0:                 100·98 / 100·100    = 0.98
* puppy [205,0,300,100]   vs object 1 [200,0,300,100]: 95·100 / 100·100    = 0.95
* kite  [302,300,400,400] vs floating 3 [300,300,400,400]: 98·100 / 100·100 = 0.98
* toy   [300,300,399,400] vs floating 3:               99·100 / 100·100    = 0.99
* mug   [600,600,700,690] vs floating 4 [600,600,700,700]: 100·90 / 100·100 = 0.90
* sphere [500,0,600,52]   vs the caption-made floating [500,0,600,50]: 100·50 / 100·52 = 0.9615
* thing [10,10,20,20]     vs object 0: 10·10 / 100·100 = 0.01 (nothing else overlaps)
* balloons [500,0,600,50] overlaps nothing.
"""

from __future__ import annotations

import copy

import pytest

from grand_engine.stages.link_phrases import LEVEL2_SCHEMA, LinkPhrases, link_phrases
from grand_engine.testing import make_unit
from grand_engine.validate import validate_annotation


def _obj(oid, bbox, labels, score, sources, attributes=()):
    return {
        "id": oid,
        "bbox": list(bbox),
        "labels": list(labels),
        "qualifiers": [""] * len(labels),
        "label": None,
        "score": score,
        "sources": list(sources),
        "attributes": list(attributes),
        "depth": None,
        "depth_note": None,
        "segmentation": None,
        "segmentation_source": None,
    }


def level1_row():
    return {
        "image_id": "img0",
        "width": 1000,
        "height": 800,
        "objects": [
            _obj(0, [0, 0, 100, 100], ["person"], 0.9, ["detect_lvis", "detect_closed"], ["a man in a red shirt"]),
            _obj(1, [200, 0, 300, 100], ["dog"], 0.8, ["detect_lvis", "detect_ov"]),
        ],
        "floating_objects": [
            _obj(2, [0, 200, 100, 300], ["bench"], 0.5, ["detect_ov"]),
            _obj(3, [300, 300, 400, 400], ["kite"], 0.4, ["detect_ov2"]),
            _obj(4, [600, 600, 700, 700], ["cup"], 0.3, ["detect_closed"]),
        ],
        "floating_attributes": [{"bbox": [10, 500, 60, 550], "score": 0.8, "attributes": ["a green sign"]}],
        "landmark": {"category": "outdoor", "fine_category": "park"},
        "affordances": [
            {"category": "seating", "description": "sit", "object_ids": [2], "labels": ["bench"]},
            {"category": "play", "description": "play", "object_ids": [1, 3], "labels": ["dog", "kite"]},
            {"category": "drink", "description": "drink", "object_ids": [4], "labels": ["cup"]},
        ],
    }


def _ph(caption_index, noun, phrase, box, score=0.9):
    return {"caption_index": caption_index, "noun": noun, "phrase": phrase, "start": 0, "end": len(phrase),
            "box": box, "score": score}  # fmt: skip


CAPTIONS = ["a man in a red shirt and two balloons", "A man in a red shirt flies a red kite."]

PHRASES = [
    _ph(1, "kite", "a red  kite", [302, 300, 400, 400]),  # VLM entry listed first: BLIP-2 entries still go first
    _ph(0, "man", "a man in a red shirt", [2, 2, 100, 100]),
    _ph(0, "Balloons", "Two  Balloons", [500, 0, 600, 50]),
    _ph(0, "dog", "a brown dog", None),  # not grounded
    _ph(1, "man", "A man in a red shirt", [0, 0, 100, 98]),
    _ph(1, "puppy", "a small puppy", [205, 0, 300, 100]),
    _ph(1, "sphere", "a sphere", [500, 0, 600, 52]),
    _ph(1, "toy", "a toy", [300, 300, 399, 400]),
    _ph(1, "thing", "a thing", [10, 10, 20, 20]),
    _ph(1, "speck", "a speck", [5, 5, 5, 9]),  # zero area: not grounded
    _ph(1, "mug", "a white mug", [600, 600, 700, 690]),
]


def test_link_phrases_hand_checked():
    src = level1_row()
    before = copy.deepcopy(src)
    out = link_phrases(src, CAPTIONS, PHRASES)
    assert src == before  # input untouched

    # Floating 3 (kite) and 4 (cup) were confirmed by groundings -> promoted, in floating order, ids 2 and 3.
    # Floating 2 (bench) was not -> first remaining floating object, id 4; caption-made objects follow.
    objects = out["objects"]
    assert [o["id"] for o in objects] == [0, 1, 2, 3]
    assert objects[0] == _obj(
        0, [0, 0, 100, 100], ["person"], 0.9, ["detect_lvis", "detect_closed"], ["a man in a red shirt"]
    )
    assert objects[1] == _obj(1, [200, 0, 300, 100], ["dog"], 0.8, ["detect_lvis", "detect_ov"])
    # kite: its own noun is not appended again (the reference's ["kite", "kite"]); "toy" is new.
    assert objects[2] == _obj(2, [300, 300, 400, 400], ["kite", "toy"], 0.4, ["detect_ov2", "ground_phrases"])
    assert objects[3] == _obj(3, [600, 600, 700, 700], ["cup", "mug"], 0.3, ["detect_closed", "ground_phrases"])

    floating = out["floating_objects"]
    assert [o["id"] for o in floating] == [4, 5, 6]
    assert floating[0] == _obj(4, [0, 200, 100, 300], ["bench"], 0.5, ["detect_ov"])
    # "Two  Balloons" matched nothing -> new floating object; "a sphere" then linked to it (noun added) but
    # an object made from the captions alone is not promoted.
    assert floating[1] == _obj(
        5, [500, 0, 600, 50], ["balloons", "sphere"], None, ["ground_phrases"], ["two balloons"]
    )
    assert floating[2] == _obj(6, [10, 10, 20, 20], ["thing"], None, ["ground_phrases"], ["a thing"])

    assert out["relationships"] == [
        {"phrase": "a man in a red shirt", "object_ids": [0]},  # both captions' man phrases merged
        {"phrase": "two balloons", "object_ids": [5]},
        {"phrase": "a red kite", "object_ids": [2]},
        {"phrase": "a small puppy", "object_ids": [1]},
        {"phrase": "a sphere", "object_ids": [5]},
        {"phrase": "a toy", "object_ids": [2]},
        {"phrase": "a thing", "object_ids": [6]},
        {"phrase": "a white mug", "object_ids": [3]},
    ]
    # Old ids 2 -> 4, 3 -> 2, 4 -> 3; object_ids kept sorted.
    assert out["affordances"] == [
        {"category": "seating", "description": "sit", "object_ids": [4], "labels": ["bench"]},
        {"category": "play", "description": "play", "object_ids": [1, 2], "labels": ["dog", "kite"]},
        {"category": "drink", "description": "drink", "object_ids": [3], "labels": ["cup"]},
    ]
    assert out["captions"] == CAPTIONS
    assert "id_counter" not in out
    for key in ("image_id", "width", "height", "floating_attributes", "landmark"):
        assert out[key] == before[key]
    assert validate_annotation(out, 2) == []


def test_best_object_wins_not_first():
    # Phrase box [0,0,100,89]: IoU 8900/10000 = 0.89 with object 0, 8900/9000 = 0.989 with object 1.
    row = level1_row()
    row["objects"] = [
        _obj(0, [0, 0, 100, 100], ["person"], 0.9, ["detect_lvis"]),
        _obj(1, [0, 0, 100, 90], ["person"], 0.8, ["detect_lvis"]),
    ]
    row["floating_objects"], row["affordances"] = [], []
    out = link_phrases(row, CAPTIONS, [_ph(0, "man", "a man", [0, 0, 100, 89])])
    assert out["relationships"] == [{"phrase": "a man", "object_ids": [1]}]
    assert out["floating_objects"] == []


def test_threshold_is_strict_and_configurable():
    # Phrase box [0,0,100,75] vs object [0,0,100,100]: IoU exactly 0.75 -> not > 0.75 -> a new floating object.
    row = level1_row()
    row["objects"] = [_obj(0, [0, 0, 100, 100], ["person"], 0.9, ["detect_lvis"])]
    row["floating_objects"], row["affordances"] = [], []
    phrases = [_ph(0, "man", "a man", [0, 0, 100, 75])]
    out = link_phrases(row, CAPTIONS, phrases)
    assert out["relationships"] == [{"phrase": "a man", "object_ids": [1]}]
    assert [o["labels"] for o in out["floating_objects"]] == [["man"]]
    out = link_phrases(row, CAPTIONS, phrases, iou_threshold=0.7)
    assert out["relationships"] == [{"phrase": "a man", "object_ids": [0]}]
    assert out["floating_objects"] == []


def test_object_and_floating_linked_independently():
    # Box [0,0,100,97]: IoU 0.97 with object 0 [0,0,100,100] and 9500/9700 = 0.979 with floating 1 [0,0,100,95].
    row = level1_row()
    row["objects"] = [_obj(0, [0, 0, 100, 100], ["person"], 0.9, ["detect_lvis"])]
    row["floating_objects"] = [_obj(1, [0, 0, 100, 95], ["man"], 0.4, ["detect_ov"])]
    row["affordances"] = []
    out = link_phrases(row, CAPTIONS, [_ph(0, "man", "a tall man", [0, 0, 100, 97])])
    assert out["relationships"] == [{"phrase": "a tall man", "object_ids": [0, 1]}]
    assert [(o["id"], o["labels"]) for o in out["objects"]] == [(0, ["person"]), (1, ["man"])]
    assert out["floating_objects"] == []


def test_phrase_box_clipped_to_image():
    # The box sticks out of the 1000x800 image; the new floating object keeps the clipped box.
    row = level1_row()
    out = link_phrases(row, CAPTIONS, [_ph(0, "sky", "the blue sky", [-50, -10, 1200, 90])])
    assert out["floating_objects"][-1]["bbox"] == [0.0, 0.0, 1000.0, 90.0]
    assert out["floating_objects"][-1]["id"] == 5
    assert validate_annotation(out, 2) == []


def test_no_phrases_keeps_level1_and_adds_empty_relationships():
    row = level1_row()
    out = link_phrases(row, CAPTIONS, [])
    assert out["relationships"] == []
    assert out["objects"] == row["objects"]
    assert out["floating_objects"] == row["floating_objects"]
    assert out["affordances"] == row["affordances"]


def test_bad_level1_ids_raise():
    row = level1_row()
    row["floating_objects"][0]["id"] = 1
    with pytest.raises(ValueError, match="id 1 is used by more than one object"):
        link_phrases(row, CAPTIONS, [])
    row = level1_row()
    row["affordances"][0]["object_ids"] = [9]
    with pytest.raises(ValueError, match="names object id 9"):
        link_phrases(row, CAPTIONS, [])


# -- the stage ----------------------------------------------------------------------------------------------


def _unit(level1_rows, phrases_by_image):
    ids = [r["image_id"] for r in level1_rows]

    def captions(k):
        return [{"image_id": i, "caption": CAPTIONS[k], "caption_normalised": CAPTIONS[k]} for i in ids]

    inputs = {
        "level1": level1_rows,
        "caption_blip2": captions(0),
        "caption_vlm": captions(1),
        "ground_phrases": [{"image_id": i, "phrases": phrases_by_image[i]} for i in ids],
    }
    return make_unit(ids, inputs=inputs)


def test_stage_end_to_end_and_error_row():
    good = level1_row()
    bad = level1_row()
    bad["image_id"] = "img1"
    bad["affordances"][1]["object_ids"] = [1, 7]  # stale id: that image becomes an error row
    unit = _unit([good, bad], {"img0": PHRASES, "img1": PHRASES})
    stage = LinkPhrases.configure()
    assert stage.inputs() == ("level1", "caption_blip2", "caption_vlm", "ground_phrases")
    result = stage.process(unit)
    assert result.table.schema.equals(LEVEL2_SCHEMA, check_metadata=False)
    rows = result.table.to_pylist()
    assert [r["image_id"] for r in rows] == ["img0"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("img1", "ValueError")]
    assert "object id 7" in result.errors[0].message
    row = rows[0]
    assert [o["id"] for o in row["objects"]] == [0, 1, 2, 3]
    assert [o["labels"] for o in row["objects"]] == [["person"], ["dog"], ["kite", "toy"], ["cup", "mug"]]
    assert [o["id"] for o in row["floating_objects"]] == [4, 5, 6]
    assert row["relationships"][0] == {"phrase": "a man in a red shirt", "object_ids": [0]}
    assert [a["object_ids"] for a in row["affordances"]] == [[4], [1, 2], [3]]
    assert row["captions"] == CAPTIONS
    assert validate_annotation(row, 2) == []


def test_stage_parameter_names():
    assert LinkPhrases.param_names() == ["iou_threshold", "iou_convention", "check_invariants"]
    with pytest.raises(ValueError, match="no parameter"):
        LinkPhrases.configure({"iou": 0.5})


def test_pixel_convention_links_as_the_reference():
    # phrase [0, 0, 99, 74.2] against object [0, 0, 99, 99]: pixel-inclusive IoU 100·75.2 / 100·100 = .752 > .75
    # (linked, as in the reference); continuous IoU 99·74.2 / 99·99 = .7495 (not linked: a new floating object)
    row = {**level1_row(), "objects": [_obj(0, [0, 0, 99, 99], ["dog"], 0.9, ["detect_lvis"])]}
    row["floating_objects"], row["affordances"] = [], []
    phrases = [_ph(0, "dog", "a dog", [0, 0, 99, 74.2])]
    pixel = link_phrases(row, CAPTIONS, phrases, iou_convention="pixel")
    assert pixel["relationships"] == [{"phrase": "a dog", "object_ids": [0]}] and pixel["floating_objects"] == []
    continuous = link_phrases(row, CAPTIONS, phrases)
    assert continuous["relationships"] == [{"phrase": "a dog", "object_ids": [1]}]
    assert [o["bbox"] for o in continuous["floating_objects"]] == [[0, 0, 99, 74.2]]
    with pytest.raises(ValueError, match="link_phrases: iou_convention must be one of continuous, pixel"):
        LinkPhrases.configure({"iou_convention": "pixels"})
