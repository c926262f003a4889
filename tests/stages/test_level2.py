"""``level2`` (spec steps 15–17 assembled on ``link_phrases``) on hand-built rows.

Image 1000×800: area 800,000, so a big-box candidate needs area > 400,000 and > the largest object box
(object 2, 500×500 = 250,000).

=====  ===================  =======  ======  ==============  =========================================
id     bbox                 area     score   label           promotion (step 15)
=====  ===================  =======  ======  ==============  =========================================
fl 3   0,0,1000,700         700,000  0.3     sky             loses to 4 (same label, lower score)
fl 4   0,100,1000,800       700,000  0.6     sky             promoted: no object is labelled "sky"
fl 5   0,0,900,600          540,000  0.4     table           kept: object 2 "table" has 0.5 >= 0.4
fl 6   50,50,950,750        630,000  0.9     dog (CLIP)      promoted: 0.9 > object 1 "dog" 0.8
fl 7   10,10,20,20          100      null    women→persons   too small
fl 8   0,0,1000,800         800,000  0.99    (no label)      never promoted
=====  ===================  =======  ======  ==============  =========================================

New ids: objects 0, 1, 2, promoted 4 → 3, 6 → 4, then 3 → 5, 5 → 6, 7 → 7, 8 → 8.
"""

from __future__ import annotations

import copy
import math

import pytest

from grand_engine.labels import person_normalise
from grand_engine.stages.level2 import LEVEL2_SCHEMA, Level2, assemble_level2, promote_big_boxes
from grand_engine.stages.scene_graph import SceneGraph
from grand_engine.testing import make_unit
from grand_engine.validate import validate_annotation


def _obj(oid, bbox, labels, score, attributes=()):
    return {
        "id": oid,
        "bbox": list(bbox),
        "labels": list(labels),
        "qualifiers": [""] * len(labels),
        "label": None,
        "score": score,
        "sources": ["detect_lvis"],
        "attributes": list(attributes),
        "depth": None,
        "depth_note": None,
        "segmentation": None,
        "segmentation_source": None,
    }


def link_row(image_id="img0"):
    return {
        "image_id": image_id,
        "width": 1000,
        "height": 800,
        "objects": [
            _obj(0, [0, 0, 100, 100], ["person", "man"], 0.9, ["a man in a red shirt", "a person standing"]),
            _obj(1, [200, 0, 300, 100], ["dog"], 0.8),
            _obj(2, [0, 0, 500, 500], ["table"], 0.5, ["a wooden table", "round"]),
        ],
        "floating_objects": [
            _obj(3, [0, 0, 1000, 700], ["sky"], 0.3),
            _obj(4, [0, 100, 1000, 800], ["sky"], 0.6),
            _obj(5, [0, 0, 900, 600], ["table"], 0.4),
            _obj(6, [50, 50, 950, 750], ["puppy", "dog"], 0.9),
            _obj(7, [10, 10, 20, 20], ["women"], None, ["two women"]),
            _obj(8, [0, 0, 1000, 800], [], 0.99),
        ],
        "floating_attributes": [{"bbox": [10, 500, 60, 550], "score": 0.8, "attributes": ["a green sign"]}],
        "landmark": {"category": "indoor", "fine_category": "living room"},
        "affordances": [
            {"category": "pet", "description": "pet", "object_ids": [1, 6], "labels": ["dog"]},
            {"category": "eat", "description": "eat at", "object_ids": [5], "labels": ["table"]},
        ],
        "relationships": [
            {"phrase": "a man", "object_ids": [0]},
            {"phrase": "the sky", "object_ids": [3, 4]},
            {"phrase": "a big dog", "object_ids": [6, 1]},
        ],
        "captions": ["A man and a dog", "a man with his dog under the sky"],
    }


DESCRIPTIONS = [
    {"object_id": 0, "description": "ASSISTANT: a man waving"},
    {"object_id": 1, "description": "a brown dog"},
    {"object_id": 2, "description": "a wooden table"},  # equals an existing attribute: not repeated
]
ASSIGNMENTS = [{"object_id": 0, "label": "man", "score": 0.7}, {"object_id": 6, "label": "dog", "score": 0.6}]
DEPTHS = [{"object_id": i, "depth": 1.5 * i, "depth_note": "box"} for i in range(8)] + [
    {"object_id": 8, "depth": float("nan"), "depth_note": "box"}
]


def test_assemble_level2_hand_checked():
    src = link_row()
    before = copy.deepcopy(src)
    out = assemble_level2(src, DESCRIPTIONS, ASSIGNMENTS, DEPTHS)
    assert src == before  # input untouched

    objects, floating = out["objects"], out["floating_objects"]
    assert [o["id"] for o in objects] == [0, 1, 2, 3, 4]
    assert [o["id"] for o in floating] == [5, 6, 7, 8]
    # Which old object sits at each new id: its box tells.
    assert [o["bbox"] for o in objects + floating] == [
        [0, 0, 100, 100],
        [200, 0, 300, 100],
        [0, 0, 500, 500],
        [0, 100, 1000, 800],  # old 4
        [50, 50, 950, 750],  # old 6
        [0, 0, 1000, 700],  # old 3
        [0, 0, 900, 600],  # old 5
        [10, 10, 20, 20],  # old 7
        [0, 0, 1000, 800],  # old 8
    ]
    # Region descriptions first, region-caption attributes after, no duplicate.
    assert objects[0]["attributes"] == ["a man waving", "a man in a red shirt", "a person standing"]
    assert objects[1]["attributes"] == ["a brown dog"]
    assert objects[2]["attributes"] == ["a wooden table", "round"]
    assert floating[2]["attributes"] == ["two women"]
    # Labels: CLIP choice, else labels[0]; person words normalised; label ∈ labels.
    assert [o["label"] for o in objects + floating] == [
        "person",
        "dog",
        "table",
        "sky",
        "dog",
        "sky",
        "table",
        "persons",
        None,
    ]
    assert objects[0]["labels"] == ["person", "man"]  # "person" already there: nothing appended
    assert floating[2]["labels"] == ["women", "persons"] and floating[2]["qualifiers"] == ["", ""]
    assert objects[4]["labels"] == ["puppy", "dog"]
    # Depth joined under the old ids, before renumbering; NaN never stored.
    assert [o["depth"] for o in objects + floating] == [0.0, 1.5, 3.0, 6.0, 9.0, 4.5, 7.5, 10.5, None]
    assert floating[3]["depth_note"] == "no finite depth in region"
    # Every id-bearing field remapped.
    assert out["relationships"] == [
        {"phrase": "a man", "object_ids": [0]},
        {"phrase": "the sky", "object_ids": [5, 3]},
        {"phrase": "a big dog", "object_ids": [4, 1]},
    ]
    assert [a["object_ids"] for a in out["affordances"]] == [[1, 4], [6]]
    for key in ("image_id", "width", "height", "floating_attributes", "landmark", "captions"):
        assert out[key] == before[key]
    assert validate_annotation(out, 2) == []


def test_person_table_is_symmetric():
    # The reference's table lacked "female" and "males" (§14.42).
    assert [person_normalise(w) for w in ("female", "females", "male", "males", "Man")] == [
        "person",
        "persons",
        "person",
        "persons",
        "person",
    ]


def test_promotion_without_objects_and_ties():
    floating = [_obj(0, [0, 0, 1000, 800], ["sky"], 0.5), _obj(1, [0, 0, 1000, 800], ["sky"], 0.5)]
    for o in floating:
        o["label"] = "sky"
    assert promote_big_boxes([], floating, 1000, 800) == [0]  # tie: the first wins
    floating[1]["score"] = None
    floating[0]["score"] = None
    assert promote_big_boxes([], floating, 1000, 800) == [0]  # no object has the label: promoted without a score
    # Exactly 50 % is not "more than 50 %".
    half = [_obj(0, [0, 0, 500, 800], ["wall"], 0.9)]
    half[0]["label"] = "wall"
    assert promote_big_boxes([], half, 1000, 800) == []
    assert promote_big_boxes([], half, 1000, 800, area_fraction=0.49) == [0]


@pytest.mark.parametrize(
    ("kind", "entries", "message"),
    [
        ("descriptions", [{"object_id": 4, "description": "sky"}], "not an object"),
        ("assignments", [{"object_id": 6, "label": "cat", "score": 0.5}], "not one of its labels"),
        ("assignments", [{"object_id": 42, "label": "cat", "score": 0.5}], "does not exist"),
        ("depths", DEPTHS[:-1], r"no entry for ids \[8\]"),
    ],
)
def test_inconsistent_side_tables_raise(kind, entries, message):
    kwargs = {"descriptions": DESCRIPTIONS, "assignments": ASSIGNMENTS, "depths": DEPTHS, kind: entries}
    with pytest.raises(ValueError, match=message):
        assemble_level2(link_row(), **kwargs)


def _unit(rows, descriptions):
    ids = [r["image_id"] for r in rows]

    def side(column, values):
        return [{"image_id": i, column: values[i]} for i in ids]

    inputs = {
        "link_phrases": rows,
        "region_attributes": side("descriptions", descriptions),
        "label_assign": side("assignments", dict.fromkeys(ids, ASSIGNMENTS)),
        "object_depth": side("depths", dict.fromkeys(ids, DEPTHS)),
    }
    return make_unit(ids, inputs=inputs)


def test_stage_error_row_and_scene_graph_on_its_output():
    rows = [link_row("img0"), link_row("img1")]
    descriptions = {"img0": DESCRIPTIONS, "img1": [{"object_id": 7, "description": "women"}]}
    stage = Level2.configure()
    assert stage.inputs() == ("link_phrases", "region_attributes", "label_assign", "object_depth")
    result = stage.process(_unit(rows, descriptions))
    assert result.table.schema.equals(LEVEL2_SCHEMA, check_metadata=False)
    assert [r["image_id"] for r in result.table.to_pylist()] == ["img0"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("img1", "ValueError")]
    row = result.table.to_pylist()[0]
    assert validate_annotation(row, 2) == []
    assert row["objects"][3]["depth"] == pytest.approx(6.0)
    assert math.isnan(DEPTHS[-1]["depth"]) and row["floating_objects"][3]["depth"] is None

    graph = SceneGraph.configure().process(make_unit(["img0"], inputs={"level2": result.table}))
    assert graph.errors == []
    text = graph.table.to_pylist()[0]["text"]
    assert graph.table.to_pylist()[0]["num_objects"] == 5
    assert "person/a man waving" in text and "dog/a brown dog" in text
    assert "the sky, Group Ids:" in text


def test_parameters():
    assert Level2.param_names() == ["promote_area_fraction", "check_invariants"]
    assert Level2.configure().promote_area_fraction == 0.5
