"""``scene_graph`` (spec §4.1) on hand-built objects with known depths and centres.

The golden texts under ``tests/data/scene_graph/`` were written by hand from the spec's layout.

Park scene (depth range 0..100 over the pool, so ``nd = 1 − d/100``):

====  ===================  =========  =====  ======================  =====
id    bbox                 centre     depth  nd → layer              group
====  ===================  =========  =====  ======================  =====
0     0,0,100,100          50,50      100    0.00 Immediate Fg       0 (seed)
1     100,0,200,100        150,50     95     0.05 Immediate Fg       0 (100 px from 0)
2     400,0,500,100        450,50     96     0.04 Immediate Fg       1 (400 px from 0)
3     0,300,100,400        50,350     50     0.50 Foreground         2 (seed)
4     150,300,250,400      200,350    80     0.20 Foreground         2 (150 px from 3)
5     330,300,430,400      380,350    60     0.40 Foreground         3 (330 px from seed 3; 180 from 4:
                                                                        grouping is not transitive)
6     0,0,1000,200         500,100    30     0.70 Midground          4
7     800,0,900,100        850,50     0      1.00 Background         5 (seed)
8     850,50,950,150       900,100    10     0.90 Background         5 (70.7 px from 7)
9     —                    —          null   excluded
10    —                    —          NaN    excluded
====  ===================  =========  =====  ======================  =====
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grand_engine.stages.scene_graph import (
    SCENE_GRAPH_SCHEMA,
    SceneGraph,
    build_scene_graph,
    correct_attribute,
    select_pool,
)
from grand_engine.testing import make_unit

DATA = Path(__file__).resolve().parents[1] / "data" / "scene_graph"


def _obj(oid, bbox, depth, label=None, labels=None, attributes=()):
    return {
        "id": oid,
        "bbox": list(bbox),
        "labels": list(labels) if labels is not None else ([label] if label else []),
        "qualifiers": None,
        "label": label,
        "score": 0.5,
        "sources": ["detect_lvis"],
        "attributes": list(attributes),
        "depth": depth,
        "depth_note": None,
        "segmentation": None,
        "segmentation_source": None,
    }


def park_row():
    return {
        "image_id": "park",
        "width": 1000,
        "height": 800,
        "objects": [
            _obj(0, [0, 0, 100, 100], 100.0, "person", attributes=["Assistant: a man in a red shirt"]),
            _obj(1, [100, 0, 200, 100], 95.0, None, labels=["dog", "puppy"]),
            _obj(2, [400, 0, 500, 100], 96.0, "traffic_light"),
            _obj(3, [0, 300, 100, 400], 50.0, "bench", attributes=["a wooden bench", "old bench"]),
            _obj(4, [150, 300, 250, 400], 80.0, "chair"),
            _obj(5, [330, 300, 430, 400], 60.0, "table"),
            _obj(6, [0, 0, 1000, 200], 30.0, "building", attributes=["tall: brick building"]),
            _obj(7, [800, 0, 900, 100], 0.0, "tree"),
            _obj(8, [850, 50, 950, 150], 10.0, "sky"),
            _obj(9, [0, 700, 50, 750], None, "cloud"),
            _obj(10, [60, 700, 90, 750], float("nan"), "lamp"),
        ],
        "floating_objects": [_obj(11, [500, 500, 600, 600], 50.0, None, labels=["kite"])],
        "floating_attributes": [],
        "landmark": {"category": "outdoor_scene", "fine_category": "park"},
        "affordances": [],
        "relationships": [
            {"phrase": "a man in a red shirt", "object_ids": [0]},
            {"phrase": "a dog next to a man", "object_ids": [1, 0]},
            {"phrase": "a bench and a table", "object_ids": [3, 5]},
            {"phrase": "a cloud", "object_ids": [9]},
            {"phrase": "a red_kite", "object_ids": [7, 11]},
        ],
        "captions": ["a man and a dog in a park", "A man  stands next to\na dog near a bench."],
    }


def test_park_layers_groups_and_text():
    out = build_scene_graph(park_row())
    assert out["num_objects"] == 9
    assert out["layers"] == [
        {
            "name": "Immediate Foreground",
            "groups": [{"group_id": 0, "object_ids": [0, 1]}, {"group_id": 1, "object_ids": [2]}],
        },
        {"name": "Foreground", "groups": [{"group_id": 2, "object_ids": [3, 4]}, {"group_id": 3, "object_ids": [5]}]},
        {"name": "Midground", "groups": [{"group_id": 4, "object_ids": [6]}]},
        {"name": "Background", "groups": [{"group_id": 5, "object_ids": [7, 8]}]},
    ]
    assert out["relationships"] == [
        {"phrase": "a man in a red shirt", "group_ids": [0]},
        {"phrase": "a dog next to a man", "group_ids": [0]},
        {"phrase": "a bench and a table", "group_ids": [2, 3]},
        {"phrase": "a red_kite", "group_ids": [5]},
    ]
    assert out["text"] == (DATA / "park.txt").read_text(encoding="utf-8")


def test_floating_objects_used_only_without_objects_and_empty_landmark():
    # No objects -> the floating objects form the pool. Equal depths -> nd = 0.5 -> Foreground.
    # Centres (5,5) and (505,505) are 707 px apart -> two groups. Null caption skipped, null landmark omitted.
    row = {
        "objects": [],
        "floating_objects": [
            _obj(20, [0, 0, 10, 10], 5.0, None, labels=["kite"]),
            _obj(21, [500, 500, 510, 510], 5.0, None, labels=["balloon"], attributes=["a red balloon"]),
        ],
        "relationships": [{"phrase": "a red balloon", "object_ids": [21]}],
        "captions": ["a kite and a balloon", None],
        "landmark": None,
    }
    out = build_scene_graph(row)
    assert out["num_objects"] == 2
    assert out["layers"] == [
        {"name": "Foreground", "groups": [{"group_id": 0, "object_ids": [20]}, {"group_id": 1, "object_ids": [21]}]}
    ]
    assert out["text"] == (DATA / "floating_only.txt").read_text(encoding="utf-8")


def test_no_depth_anywhere_and_partial_landmark():
    row = {
        "objects": [_obj(0, [0, 0, 10, 10], None, "cat")],
        "floating_objects": [_obj(1, [0, 0, 10, 10], 3.0, "dog")],  # objects exist: floating never used
        "relationships": [{"phrase": "a cat", "object_ids": [0]}],
        "captions": ["a cat", "  "],
        "landmark": {"category": "indoor", "fine_category": ""},
    }
    out = build_scene_graph(row)
    assert out["num_objects"] == 0
    assert out["layers"] == []
    assert out["relationships"] == []
    assert out["text"] == "Short Captions:\na cat\n\nRelationships:\n\nLandmarks:\nindoor\n"


def test_layer_thresholds_are_strict():
    # Depths 0, 40, 15, 10 over range 0..40: nd = 1 - d/40 = 1.0, 0.0, 0.625, 0.75.
    # 0.625 is not < 0.6 -> Midground; 0.75 < 0.85 -> Midground; with midground=0.75 it becomes Background.
    objs = [
        _obj(0, [0, 0, 10, 10], 0.0, "a"),
        _obj(1, [1000, 0, 1010, 10], 40.0, "b"),
        _obj(2, [0, 1000, 10, 1010], 15.0, "c"),
        _obj(3, [1000, 1000, 1010, 1010], 10.0, "d"),
    ]
    out = build_scene_graph({"objects": objs})
    assert [(layer["name"], [g["object_ids"] for g in layer["groups"]]) for layer in out["layers"]] == [
        ("Immediate Foreground", [[1]]),
        ("Midground", [[2], [3]]),
        ("Background", [[0]]),
    ]
    out = build_scene_graph({"objects": objs}, layer_thresholds=(0.1, 0.6, 0.75))
    assert [(layer["name"], [g["object_ids"] for g in layer["groups"]]) for layer in out["layers"]] == [
        ("Immediate Foreground", [[1]]),
        ("Midground", [[2]]),
        ("Background", [[0], [3]]),
    ]


def test_grouping_distance_is_strict():
    # Centres (5,5), (205,5): exactly 200 px apart -> not < 200 -> separate groups; (204,5) joins.
    objs = [_obj(0, [0, 0, 10, 10], 1.0, "a"), _obj(1, [200, 0, 210, 10], 1.0, "b")]
    out = build_scene_graph({"objects": objs})
    assert [g["object_ids"] for g in out["layers"][0]["groups"]] == [[0], [1]]
    objs[1]["bbox"] = [199, 0, 209, 10]
    out = build_scene_graph({"objects": objs})
    assert [g["object_ids"] for g in out["layers"][0]["groups"]] == [[0, 1]]


def test_cap_with_more_attributed_objects_than_the_cap():
    # 105 attributed objects after 10 plain ones: the pool is exactly the first 100 attributed ones.
    plain = [_obj(i, [0, 0, 10, 10], 1.0, "rock") for i in range(10)]
    attributed = [_obj(10 + i, [0, 0, 10, 10], 1.0, "leaf", attributes=[f"leaf {i}"]) for i in range(105)]
    pool = select_pool({"objects": plain + attributed})
    assert [o["id"] for o in pool] == list(range(10, 110))
    out = build_scene_graph({"objects": plain + attributed})
    assert out["num_objects"] == 100
    assert [g["object_ids"] for g in out["layers"][0]["groups"]] == [list(range(10, 110))]


def test_cap_fills_with_plain_objects_in_order():
    # 30 attributed (one with only an empty attribute, which counts as none) + 80 plain -> 29 attributed then
    # the first 71 plain in pool order; depth-less objects are dropped before the cap.
    objs = [_obj(i, [0, 0, 10, 10], 1.0, "leaf", attributes=[f"leaf {i}"]) for i in range(29)]
    objs.append(_obj(29, [0, 0, 10, 10], 1.0, "leaf", attributes=[""]))
    objs += [_obj(30 + i, [0, 0, 10, 10], 1.0, "rock") for i in range(80)]
    objs += [_obj(200 + i, [0, 0, 10, 10], None, "ghost", attributes=["x"]) for i in range(5)]
    pool = select_pool({"objects": objs}, max_objects=100)
    assert [o["id"] for o in pool] == list(range(29)) + [29] + list(range(30, 100))


def test_correct_attribute():
    assert correct_attribute("Assistant: a red car") == "a red car"
    assert correct_attribute("istant: a red car: parked") == "a red car: parked"
    assert correct_attribute("a  red\ncar") == "a red car"


def test_bad_thresholds_raise():
    with pytest.raises(ValueError, match="three increasing"):
        build_scene_graph({"objects": []}, layer_thresholds=(0.6, 0.1, 0.85))


def test_stage_on_level2_table():
    broken = _obj(0, [0, 0, 1, 1], 1.0, "x")
    broken["bbox"] = None
    rows = [park_row(), {**park_row(), "image_id": "broken", "objects": [broken]}]
    unit = make_unit(["park", "broken"], inputs={"level2": rows})
    stage = SceneGraph.configure()
    assert stage.inputs() == ("level2",)
    result = stage.process(unit)
    assert result.table.schema.equals(SCENE_GRAPH_SCHEMA, check_metadata=False)
    out = result.table.to_pylist()
    assert [r["image_id"] for r in out] == ["park"]
    assert out[0]["text"] == (DATA / "park.txt").read_text(encoding="utf-8")
    assert out[0]["num_objects"] == 9
    assert [(e.image_id, e.error_type) for e in result.errors] == [("broken", "ValueError")]
    assert "object id 0 has no usable bbox" in result.errors[0].message
