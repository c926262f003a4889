"""``level1`` on hand-built detector tables; every expected value was worked out by hand from spec 10a/10b."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.runtime.stage import UnitInput
from grand_engine.schema import DETECTIONS_FIELDS, IMAGES_SCHEMA, table_schema
from grand_engine.stages.level1 import DEFAULT_SOURCES, LEVEL1_SCHEMA, Level1
from grand_engine.validate import validate_annotation

DETECTIONS_SCHEMA = table_schema(*DETECTIONS_FIELDS)
SAM_SCHEMA = table_schema(*DETECTIONS_FIELDS, ("annotation_ids", pa.list_(pa.int64())))
CAPTIONS_SCHEMA = table_schema(
    ("boxes", DETECTIONS_FIELDS[0][1]), ("scores", pa.list_(pa.float32())), ("descriptions", pa.list_(pa.string()))
)
LANDMARK_SCHEMA = table_schema(("category", pa.string()), ("fine_category", pa.string()), ("reason", pa.string()))


def images_table(sizes: dict[str, tuple[int, int]]) -> pa.Table:
    rows = [
        {
            "image_id": image_id,
            "file_name": f"{image_id}.jpg",
            "width": w,
            "height": h,
            "format": "JPEG",
            "orientation": 1,
            "source": "shard.tar",
            "offset": 0,
            "size": 0,
        }
        for image_id, (w, h) in sizes.items()
    ]
    return pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA)


def slot_table(slot: str, per_image: dict[str, list[tuple]], image_ids: list[str]) -> pa.Table:
    """``per_image[id]`` = ``[(box, score, label_or_description), ...]``; images without entries get empty lists."""
    rows = []
    for image_id in image_ids:
        dets = per_image.get(image_id, [])
        row = {"image_id": image_id, "boxes": [d[0] for d in dets], "scores": [d[1] for d in dets]}
        if slot == "region_captions":
            row["descriptions"] = [d[2] for d in dets]
        else:
            row["labels"] = [d[2] for d in dets]
        if slot == "sam_classify":
            row["annotation_ids"] = list(range(len(dets)))
        rows.append(row)
    schema = {"region_captions": CAPTIONS_SCHEMA, "sam_classify": SAM_SCHEMA}.get(slot, DETECTIONS_SCHEMA)
    return pa.Table.from_pylist(rows, schema=schema)


def make_unit(sizes, detections: dict[str, dict[str, list[tuple]]], landmarks=None) -> UnitInput:
    ids = list(sizes)
    inputs = {slot: slot_table(slot, per_image, ids) for slot, per_image in detections.items()}
    if landmarks is not None:
        rows = [{"image_id": i, **landmarks.get(i, {})} for i in ids]
        inputs["landmark"] = pa.Table.from_pylist(rows, schema=LANDMARK_SCHEMA)
    return UnitInput("shard/00000", images_table(sizes), inputs)


def run(unit: UnitInput, **params):
    stage = Level1.configure(params)
    stage.setup()
    result = stage.process(unit)
    assert result.table.schema.equals(LEVEL1_SCHEMA, check_metadata=True)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    for row in rows.values():  # invariants on every level1 row
        assert validate_annotation(row, 1) == [], row["image_id"]
        _check_invariants_directly(row)
    return rows, result.errors


def _check_invariants_directly(row):
    n = len(row["objects"])
    ids = [o["id"] for o in row["objects"]] + [o["id"] for o in row["floating_objects"]]
    assert ids == list(range(len(ids)))
    assert all(o["id"] < n for o in row["objects"])
    for o in [*row["objects"], *row["floating_objects"], *row["floating_attributes"]]:
        x1, y1, x2, y2 = o["bbox"]
        assert 0 <= x1 <= x2 <= row["width"] and 0 <= y1 <= y2 <= row["height"]
        assert all(math.isfinite(v) for v in (*o["bbox"], o["score"]))


def by_bbox(entries):
    return {tuple(e["bbox"]): e for e in entries}


def brief(obj):
    return (obj["id"], obj["labels"], obj["qualifiers"], obj["sources"], obj["attributes"])


# -- unit 1: three images with every slot ----------------------------------------------------------

SIZES = {"vote": (640, 480), "persons": (1000, 500), "empty": (320, 240)}

DETECTIONS = {
    "detect_lvis": {
        "vote": [
            ([300, 300, 400, 400], 0.95, "chair"),  # A: object 0, absorbs the sam "chair" B (IoU .8)
            ([100, 100, 200, 200], 0.9, "dog"),  # L1: object 1
            ([100, 100, 200, 195], 0.7, "dog"),  # IoU .95 with L1: removed by self-NMS
            ([300, 100, 400, 200], 0.5, "person"),  # L2: passes the person threshold .2, object 3
            ([450, 50, 550, 250], 0.65, "woman"),  # L5: object 2, absorbs closed "person"
            ([10, 10, 60, 60], 0.55, "wine_glass"),  # below .6: filtered out
        ],
        "persons": [
            ([200, 300, 300, 400], 0.76, "person"),  # lone, > .75: object 0
            ([10, 300, 110, 400], 0.74, "person"),  # lone, .6 < s <= .75: floating
            ([400, 300, 500, 400], 0.5, "person"),  # lone, <= .6: dropped
            ([600, 430, 650, 490], 0.6, "person"),  # lone, exactly .6 (not >): dropped
            ([520, 300, 580, 400], 0.75, "person"),  # lone, exactly .75 (not >): floating
        ],
    },
    "detect_closed": {
        "vote": [
            ([102, 100, 200, 200], 0.8, "dog"),  # IoU .98 with L1: absorbed
            ([300, 100, 400, 165], 0.9, "person"),  # IoU exactly .65 with L2: absorbed
            ([450, 50, 550, 250], 0.3, "person"),  # IoU 1 with L5: absorbed
            ([10, 10, 60, 60], 0.25, "wine_glass"),  # lone: floating 5
            ([560, 10, 600, 50], 0.22, "cup"),  # lone: floating 6
            # C: IoU .636 with A, .778 with B, but B is already consumed by A: floating 4
            ([300, 290, 400, 370], 0.5, "chair"),
        ],
        "persons": [
            ([10, 10, 110, 210], 0.6, "person"),  # lone, > .5: object 1
            ([200, 10, 300, 210], 0.45, "person"),  # lone, .2 < s <= .5: floating
            ([400, 10, 500, 210], 0.15, "person"),  # <= .2: filtered out
            ([520, 10, 580, 210], 0.5, "person"),  # lone, exactly .5: floating
        ],
    },
    "sam_classify": {
        "vote": [
            ([100, 100, 200, 200], 0.4, "dog"),  # IoU 1 with L1: absorbed
            ([500, 300, 600, 400], 0.5, "pitcher_(vessel_for_liquid)"),  # lone: floating 7
            ([560, 60, 600, 100], 0.35, "cup"),  # lone: floating 8
            ([300, 300, 400, 380], 0.5, "chair"),  # B: absorbed by A
        ],
        "persons": [([600, 10, 700, 110], 0.9, "person")],  # lone person of an open-vocabulary slot: dropped
    },
    "detect_ov": {
        "vote": [([300, 100, 400, 164.9], 0.3, "man")],  # IoU .649 with L2, C2 consumed: floating 9
        "persons": [
            ([600, 300, 700, 400], 0.5, "kite"),  # K1: absorbs two detect_ov2 boxes, object 2
            ([720, 10, 780, 110], 0.8, "Person"),  # lone person (after normalisation): dropped
        ],
    },
    "detect_ov2": {
        "persons": [
            ([600, 300, 700, 380], 0.6, "kite"),  # IoU .8 with K1: absorbed
            ([600, 320, 700, 400], 0.4, "Frisbee"),  # IoU .8 with K1, .6 with the box above: absorbed
            ([800, 12, 900, 110], 0.35, "umbrella"),  # U1: absorbs the GRiT box, object 3
            ([900, 400, 950, 450], 0.3, "kite"),  # exactly the .3 threshold (not >): filtered out
        ],
    },
    "region_captions": {
        "vote": [
            ([101, 101, 199, 199], 0.8, "a brown dog"),  # IoU .9604 with L1: absorbed
            ([0, 400, 50, 450], 0.9, "a red ball"),  # no detector box: floating attribute
            ([0, 0, 5, 5], 0.25, "too unsure"),  # <= .3: filtered out
        ],
        "persons": [([800, 10, 900, 110], 0.8, "a red umbrella")],  # IoU .98 with U1: absorbed
    },
}

LANDMARKS = {
    "vote": {"category": "Indoor scene", "fine_category": "Living space"},
    "persons": {"category": "Outdoor scene", "fine_category": "Urban landscape"},
    "empty": {"category": "", "fine_category": "", "reason": "no option matched"},
}


@pytest.fixture(scope="module")
def unit1_rows():
    rows, errors = run(make_unit(SIZES, DETECTIONS, LANDMARKS))
    assert errors == []
    assert list(rows) == list(SIZES)
    return rows


def test_voting_across_models(unit1_rows):
    row = unit1_rows["vote"]
    assert (row["width"], row["height"]) == (640, 480)
    objects = row["objects"]
    assert [brief(o) for o in objects] == [
        (0, ["chair"], [""], ["detect_lvis", "sam_classify"], []),
        (1, ["dog"], [""], ["detect_lvis", "detect_closed", "sam_classify", "region_captions"], ["a brown dog"]),
        (2, ["person"], [""], ["detect_lvis", "detect_closed"], []),  # woman + person -> person, deduplicated
        (3, ["person"], [""], ["detect_lvis", "detect_closed"], []),
    ]
    # the anchor's box and score, never averaged
    assert objects[1]["bbox"] == [100, 100, 200, 200] and objects[1]["score"] == pytest.approx(0.9)
    assert objects[3]["bbox"] == [300, 100, 400, 200] and objects[3]["score"] == pytest.approx(0.5)
    assert all(o[k] is None for o in objects for k in ("label", "depth", "segmentation", "segmentation_source"))

    floating = row["floating_objects"]
    assert [brief(o) for o in floating] == [
        (4, ["chair"], [""], ["detect_closed"], []),  # a consumed box is never absorbed a second time
        (5, ["wine glass"], [""], ["detect_closed"], []),
        (6, ["cup"], [""], ["detect_closed"], []),
        (7, ["pitcher"], ["vessel for liquid"], ["sam_classify"], []),
        (8, ["cup"], [""], ["sam_classify"], []),
        (9, ["man"], [""], ["detect_ov"], []),  # gender normalisation touches objects only
    ]
    assert floating[0]["bbox"] == [300, 290, 400, 370]
    assert floating[5]["bbox"] == pytest.approx([300, 100, 400, 164.9])

    assert row["floating_attributes"] == [
        {"bbox": [0, 400, 50, 450], "score": pytest.approx(0.9), "attributes": ["a red ball"]}
    ]
    assert row["affordances"] == [
        {"category": "Contain-2", "description": None, "object_ids": [6, 7, 8], "labels": ["cup", "pitcher"]}
    ]
    assert row["landmark"] == {"category": "Indoor scene", "fine_category": "Living space"}


def test_person_rules_absorbed_twice_and_caption_only_agreement(unit1_rows):
    row = unit1_rows["persons"]
    objects = row["objects"]
    assert [(o["id"], o["bbox"], o["labels"], o["sources"], o["attributes"]) for o in objects] == [
        (0, [200, 300, 300, 400], ["person"], ["detect_lvis"], []),  # lone LVIS person above .75
        (1, [10, 10, 110, 210], ["person"], ["detect_closed"], []),  # lone closed-set person above .5
        # two boxes of detect_ov2 absorbed by the same anchor; sources listed once
        (2, [600, 300, 700, 400], ["kite", "frisbee"], ["detect_ov", "detect_ov2"], []),
        # the only agreement is a GRiT caption
        (3, [800, 12, 900, 110], ["umbrella"], ["detect_ov2", "region_captions"], ["a red umbrella"]),
    ]
    assert objects[2]["score"] == pytest.approx(0.5)
    floating = row["floating_objects"]
    assert [(o["id"], o["bbox"], o["score"]) for o in floating] == [
        (4, [520, 300, 580, 400], pytest.approx(0.75)),  # LVIS person at exactly .75
        (5, [10, 300, 110, 400], pytest.approx(0.74)),
        (6, [520, 10, 580, 210], pytest.approx(0.5)),  # closed person at exactly .5
        (7, [200, 10, 300, 210], pytest.approx(0.45)),
    ]
    assert all(o["labels"] == ["person"] for o in floating)
    assert row["floating_attributes"] == []
    assert [(a["category"], a["object_ids"], a["labels"]) for a in row["affordances"]] == [
        ("Shelter", [3], ["umbrella"]),
        ("Throw", [2], ["frisbee"]),
        ("Crutches", [3], ["umbrella"]),
    ]


def test_every_detector_empty(unit1_rows):
    row = unit1_rows["empty"]
    assert row["objects"] == [] and row["floating_objects"] == [] and row["floating_attributes"] == []
    assert row["affordances"] == []
    assert row["landmark"] == {"category": "", "fine_category": ""}
    assert (row["width"], row["height"]) == (320, 240)


# -- unit 2: disabled slots, messy boxes, a malformed row --------------------------------------------

SIZES2 = {"bat": (300, 200), "broken": (300, 200)}
DETECTIONS2 = {
    "detect_closed": {
        "bat": [
            ([0, 0, 100, 100], 0.5, "baseball_bat"),
            ([-20, -10, 50, 40], 0.5, "sports_ball"),  # clipped to [0, 0, 50, 40]; IoU .2 with the bat
            ([250, 150, 350, 260], 0.6, "dog"),  # clipped to [250, 150, 300, 200]
            ([10, 10, 20, 20], math.nan, "cat"),  # NaN score: discarded
            ([math.nan, 0, 5, 5], 0.9, "cat"),  # NaN coordinate: discarded
            ([120, 120, 100, 100], 0.7, "bird"),  # inverted corners: [100, 100, 120, 120]
        ],
    },
    "region_captions": {"bat": [([0, 0, 100, 98], 0.9, "a wooden bat")]},  # IoU .98 with the bat
}


def _unit2():
    unit = make_unit(SIZES2, DETECTIONS2)  # no landmark, no detect_lvis / sam_classify / detect_ov / detect_ov2
    broken = pa.Table.from_pylist(
        [
            {
                "image_id": "bat",
                **{k: v for k, v in unit.inputs["detect_closed"].to_pylist()[0].items() if k != "image_id"},
            },
            {"image_id": "broken", "boxes": [[0, 0, 1, 1], [0, 0, 2, 2]], "scores": [0.5], "labels": ["a", "b"]},
        ],
        schema=DETECTIONS_SCHEMA,
    )
    unit.inputs["detect_closed"] = broken
    return unit


def test_missing_slots_messy_boxes_and_bad_rows():
    rows, errors = run(_unit2())
    assert [(e.image_id, e.error_type) for e in errors] == [("broken", "ValueError")]
    assert "detect_closed" in errors[0].message and "1 scores" in errors[0].message
    row = rows["bat"]
    assert row["landmark"] is None
    assert [brief(o) for o in row["objects"]] == [
        (0, ["baseball bat"], [""], ["detect_closed", "region_captions"], ["a wooden bat"])
    ]
    # closed-set anchors by descending score: bird .7, dog .6, bat .5 (object), sports ball .5
    assert [(o["id"], o["labels"], o["bbox"]) for o in row["floating_objects"]] == [
        (1, ["bird"], [100, 100, 120, 120]),
        (2, ["dog"], [250, 150, 300, 200]),
        (3, ["sports ball"], [0, 0, 50, 40]),
    ]
    # normalised labels match the affordance table ("baseball_bat" never matched in the reference)
    assert [(a["category"], a["object_ids"], a["labels"]) for a in row["affordances"]] == [
        ("Hit", [0], ["baseball bat"]),
        ("Swing", [0], ["baseball bat"]),
    ]


def test_parameters_sources_and_threshold_override():
    stage = Level1.configure({"sources": ["detect_closed", "region_captions"], "thresholds": {"detect_closed": 0.55}})
    assert stage.inputs() == ("images", "landmark", "detect_closed", "region_captions")
    assert Level1().inputs() == ("images", "landmark", *DEFAULT_SOURCES) == Level1.requires
    assert stage.thresholds["detect_lvis"] == 0.6  # untouched defaults survive a partial override
    rows, _ = run(_unit2(), sources=["detect_closed", "region_captions"], thresholds={"detect_closed": 0.55})
    row = rows["bat"]
    # at .55 the bat (.5) and the ball (.5) are filtered, so the caption has no detector box
    assert row["objects"] == []
    assert [o["labels"] for o in row["floating_objects"]] == [["bird"], ["dog"]]
    assert [a["attributes"] for a in row["floating_attributes"]] == [["a wooden bat"]]


def test_bad_parameters_fail_at_configure():
    with pytest.raises(ValueError, match="no score threshold for source"):
        Level1.configure({"sources": ["detect_new"]})
    with pytest.raises(ValueError, match="duplicate slot"):
        Level1.configure({"sources": ["detect_lvis", "detect_lvis"]})
    with pytest.raises(ValueError, match=r"thresholds\['detect_ov'\] must be a finite number"):
        Level1.configure({"thresholds": {"detect_ov": "high"}})
    with pytest.raises(ValueError, match="has no parameter"):
        Level1.configure({"iou": 0.5})


def test_self_nms_min_score_matters_only_below_it():
    # with detect_ov's threshold lowered to .05, a .09 box is still dropped before self-NMS (score < .1),
    # while a .12 box survives even though a .5 box of another label overlaps it below the .9 self-NMS IoU
    sizes = {"im": (200, 200)}
    dets = {
        "detect_ov": {
            "im": [
                ([0, 0, 100, 100], 0.09, "ball"),
                ([150, 150, 190, 190], 0.12, "leaf"),
                ([150, 150, 190, 186], 0.5, "twig"),  # IoU .9 with the leaf: not > .9, both kept
            ]
        }
    }
    rows, _ = run(make_unit(sizes, dets), thresholds={"detect_ov": 0.05})
    assert [o["labels"] for o in rows["im"]["floating_objects"]] == [["twig"], ["leaf"]]
    rows, _ = run(make_unit(sizes, dets), thresholds={"detect_ov": 0.05}, nms_min_score=0.05)
    assert [o["labels"] for o in rows["im"]["floating_objects"]] == [["twig"], ["leaf"], ["ball"]]


def test_region_caption_slot_earlier_in_the_order():
    # a caption anchor that absorbs a detector box becomes an object with the detector's label
    sizes = {"im": (200, 200)}
    dets = {
        "region_captions": {"im": [([0, 0, 100, 100], 0.9, "a red cup"), ([150, 150, 190, 190], 0.8, "a leaf")]},
        "detect_closed": {"im": [([0, 0, 100, 90], 0.5, "cup")]},
    }
    rows, _ = run(make_unit(sizes, dets), sources=["region_captions", "detect_closed"])
    row = rows["im"]
    assert [brief(o) for o in row["objects"]] == [
        (0, ["cup"], [""], ["region_captions", "detect_closed"], ["a red cup"])
    ]
    assert row["objects"][0]["bbox"] == [0, 0, 100, 100]  # the caption box is the anchor
    assert [a["attributes"] for a in row["floating_attributes"]] == [["a leaf"]]


# -- a 2,000-box image ------------------------------------------------------------------------------

GRID = 20  # 20 x 20 cells of 100 px, 5 boxes per cell: 2,000 boxes on a 2000 x 2000 image


def _cell_boxes(i: int, j: int):
    """(slot, box, score, label) for cell (i, j), and the cell's pattern (0..3)."""
    x0, y0 = 100 * j, 100 * i
    pattern = (i * GRID + j) % 4

    def b(x1, y1, x2, y2):
        return [x0 + x1, y0 + y1, x0 + x2, y0 + y2]

    base = b(20, 20, 80, 80)
    if pattern == 0:  # everyone agrees
        out = [
            ("detect_lvis", base, 0.9, "dog"),
            ("detect_closed", b(22, 20, 82, 80), 0.8, "dog"),  # IoU .935
            ("sam_classify", base, 0.5, "dog"),
            ("detect_ov", base, 0.5, "dog"),
            ("region_captions", base, 0.8, "a dog"),
        ]
    elif pattern == 1:  # the LVIS box is off (IoU .286), the others agree
        out = [
            ("detect_lvis", b(40, 40, 100, 100), 0.9, "cat"),
            ("detect_closed", base, 0.8, "cat"),
            ("detect_ov", base, 0.5, "cat"),
            ("detect_ov2", base, 0.5, "domestic_cat"),
            ("region_captions", base, 0.8, "a cat"),
        ]
    elif pattern == 2:  # five lonely boxes
        out = [
            ("detect_lvis", b(5, 5, 35, 35), 0.9, "car"),  # floating
            ("detect_closed", b(60, 5, 90, 35), 0.8, "car"),  # floating
            ("detect_ov", b(5, 60, 35, 90), 0.5, "trees"),  # floating
            ("detect_ov2", b(60, 60, 90, 90), 0.9, "person"),  # dropped
            ("region_captions", b(35, 35, 65, 65), 0.8, "a thing"),  # floating attribute
        ]
    else:  # person rules
        out = [
            ("detect_lvis", b(5, 5, 30, 95), 0.8, "person"),  # object (> .75)
            ("detect_closed", b(35, 5, 60, 95), 0.3, "person"),  # floating (.2 < s <= .5)
            ("detect_closed", b(65, 5, 95, 45), 0.1, "person"),  # filtered (<= .2)
            ("detect_ov", b(65, 50, 95, 95), 0.9, "person"),  # dropped
            ("sam_classify", b(65, 5, 95, 45), 0.1, "dog"),  # filtered (<= .3)
        ]
    return out, pattern


def _big_unit():
    per_slot: dict[str, list[tuple]] = {s: [] for s in DEFAULT_SOURCES}
    for i in range(GRID):
        for j in range(GRID):
            for slot, box, score, label in _cell_boxes(i, j)[0]:
                per_slot[slot].append((box, score, label))
    rng = np.random.default_rng(7)
    for slot in per_slot:  # input order must not matter
        order = rng.permutation(len(per_slot[slot]))
        per_slot[slot] = [per_slot[slot][k] for k in order]
    assert sum(len(v) for v in per_slot.values()) == 2000
    return make_unit({"big": (2000, 2000)}, {slot: {"big": dets} for slot, dets in per_slot.items()})


def test_two_thousand_boxes():
    rows, errors = run(_big_unit())
    assert errors == []
    row = rows["big"]
    # 100 cells of each pattern
    assert len(row["objects"]) == 100 + 100 + 100
    assert len(row["floating_objects"]) == 100 + 300 + 100
    assert len(row["floating_attributes"]) == 100
    objects = by_bbox(row["objects"])
    floating = by_bbox(row["floating_objects"])
    attrs = by_bbox(row["floating_attributes"])
    for i, j in [(0, 0), (0, 1), (0, 2), (0, 3), (7, 13), (10, 10), (19, 18), (19, 19), (11, 6), (5, 1)]:
        x0, y0 = 100 * j, 100 * i
        pattern = _cell_boxes(i, j)[1]
        base = (x0 + 20, y0 + 20, x0 + 80, y0 + 80)
        if pattern == 0:
            obj = objects[base]
            assert obj["labels"] == ["dog"] and obj["attributes"] == ["a dog"]
            assert obj["sources"] == ["detect_lvis", "detect_closed", "sam_classify", "detect_ov", "region_captions"]
            assert obj["score"] == pytest.approx(0.9)
        elif pattern == 1:
            obj = objects[base]
            assert obj["labels"] == ["cat", "domestic cat"] and obj["attributes"] == ["a cat"]
            assert obj["sources"] == ["detect_closed", "detect_ov", "detect_ov2", "region_captions"]
            assert floating[(x0 + 40, y0 + 40, x0 + 100, y0 + 100)]["labels"] == ["cat"]
        elif pattern == 2:
            assert floating[(x0 + 5, y0 + 5, x0 + 35, y0 + 35)]["sources"] == ["detect_lvis"]
            assert floating[(x0 + 60, y0 + 5, x0 + 90, y0 + 35)]["sources"] == ["detect_closed"]
            assert floating[(x0 + 5, y0 + 60, x0 + 35, y0 + 90)]["labels"] == ["trees"]
            assert (x0 + 60, y0 + 60, x0 + 90, y0 + 90) not in floating
            assert attrs[(x0 + 35, y0 + 35, x0 + 65, y0 + 65)]["attributes"] == ["a thing"]
        else:
            assert objects[(x0 + 5, y0 + 5, x0 + 30, y0 + 95)]["sources"] == ["detect_lvis"]
            assert floating[(x0 + 35, y0 + 5, x0 + 60, y0 + 95)]["labels"] == ["person"]
            for gone in [(x0 + 65, y0 + 5, x0 + 95, y0 + 45), (x0 + 65, y0 + 50, x0 + 95, y0 + 95)]:
                assert gone not in floating and gone not in objects
    # objects are created LVIS anchors first: the 200 LVIS-anchored objects (.9 dogs, then .8 persons) come first
    assert {tuple(o["labels"]) for o in row["objects"][:100]} == {("dog",)}
    assert {tuple(o["labels"]) for o in row["objects"][100:200]} == {("person",)}
    assert {tuple(o["labels"]) for o in row["objects"][200:]} == {("cat", "domestic cat")}


# -- the IoU convention of the voting --------------------------------------------------------------


NEAR_065 = {
    "detect_lvis": {"im": [([100, 100, 199, 199], 0.9, "dog")]},
    # pixel-inclusive: 100 x 65 of 100 x 100 pixels = .65 exactly; continuous: 99 x 64 / (99 x 99) = .6465
    "detect_closed": {"im": [([100, 100, 199, 164], 0.8, "puppy")]},
}


def test_pixel_convention_votes_as_the_reference_continuous_does_not():
    rows, _ = run(make_unit({"im": (400, 300)}, NEAR_065), iou_convention="pixel")
    assert [brief(o) for o in rows["im"]["objects"]] == [
        (0, ["dog", "puppy"], ["", ""], ["detect_lvis", "detect_closed"], [])
    ]
    assert rows["im"]["floating_objects"] == []
    for params in ({}, {"iou_convention": "continuous"}):  # continuous is the default
        rows, _ = run(make_unit({"im": (400, 300)}, NEAR_065), **params)
        assert rows["im"]["objects"] == []
        assert [brief(o) for o in rows["im"]["floating_objects"]] == [
            (0, ["dog"], [""], ["detect_lvis"], []),
            (1, ["puppy"], [""], ["detect_closed"], []),
        ]


def test_unknown_iou_convention_fails_at_configure():
    with pytest.raises(ValueError, match=r"level1: iou_convention must be one of continuous, pixel; got 'pixels'"):
        Level1.configure({"iou_convention": "pixels"})


def test_images_of_one_unit_never_suppress_or_vote_with_each_other():
    # The unit's detections are filtered and matched together (one grouped self-NMS, one grouped candidate
    # search), so identical boxes in two images must stay two images' boxes.
    box = [10, 10, 60, 60]
    dets = {
        "detect_lvis": {"a": [(box, 0.9, "dog")], "b": [(box, 0.95, "cat")]},
        "detect_closed": {"b": [(box, 0.5, "cat")]},
    }
    rows, errors = run(make_unit({"a": (100, 100), "b": (100, 100)}, dets))
    assert errors == []
    assert rows["a"]["objects"] == [] and [brief(o) for o in rows["a"]["floating_objects"]] == [
        (0, ["dog"], [""], ["detect_lvis"], [])
    ]
    assert [brief(o) for o in rows["b"]["objects"]] == [(0, ["cat"], [""], ["detect_lvis", "detect_closed"], [])]
    assert rows["b"]["floating_objects"] == []


def _random_detections(rng, image_ids, size):
    """Jittered copies of a few objects per image, over every slot; counts vary from none to dozens."""
    labels = ["dog", "person", "man", "cup", "wine_glass"]
    dets: dict[str, dict[str, list[tuple]]] = {slot: {} for slot in DEFAULT_SOURCES}
    for image_id in image_ids:
        n_objects = int(rng.integers(0, 12))
        wh = rng.uniform(5, 80, size=(n_objects, 2))
        xy = rng.uniform(0, 1, size=(n_objects, 2)) * (np.array(size) - wh)
        truth = np.concatenate([xy, xy + wh], axis=1)
        for slot in DEFAULT_SOURCES:
            k = int(rng.integers(0, 3 * n_objects + 1))
            if not n_objects or not k:
                continue
            pick = rng.integers(n_objects, size=k)
            boxes = np.round((truth[pick] + rng.normal(0, 2.0, size=(k, 4))) * 2) / 2  # half-pixel grid: ties
            texts = [f"a {labels[p % 5]}" if slot == "region_captions" else labels[p % 5] for p in pick]
            scores = np.round(rng.uniform(0.05, 1.0, size=k), 2)
            dets[slot][image_id] = list(zip(boxes.tolist(), scores.tolist(), texts, strict=True))
    return dets


@pytest.mark.parametrize("convention", ["continuous", "pixel"])
def test_a_unit_merges_each_image_exactly_as_alone(convention):
    rng = np.random.default_rng(11)
    ids = [f"im{k}" for k in range(12)]
    sizes = dict.fromkeys(ids, (320, 240))
    dets = _random_detections(rng, ids, (320, 240))
    together, errors = run(make_unit(sizes, dets), iou_convention=convention)
    assert errors == []
    merged = sum(len(r["objects"]) for r in together.values())
    assert merged > 20  # the data really votes
    for image_id in ids:
        alone_dets = {slot: {image_id: per.get(image_id, [])} for slot, per in dets.items()}
        alone, _ = run(make_unit({image_id: (320, 240)}, alone_dets), iou_convention=convention)
        assert together[image_id] == alone[image_id], image_id


def test_nulls_inside_the_lists_are_discarded_detections():
    # a null box, a null coordinate or a null score drops that detection; a null list is an empty slot row
    unit = make_unit({"im": (200, 200), "other": (200, 200)}, {})
    unit.inputs["detect_closed"] = pa.Table.from_pylist(
        [
            {
                "image_id": "im",
                "boxes": [[0, 0, 50, 50], None, [0, None, 10, 10], [100, 100, 150, 150]],
                "scores": [0.5, 0.9, 0.9, None],
                "labels": ["dog", "cat", "bird", "cow"],
            },
            {"image_id": "other", "boxes": None, "scores": None, "labels": None},
        ],
        schema=DETECTIONS_SCHEMA,
    )
    rows, errors = run(unit)
    assert errors == []
    assert [brief(o) for o in rows["im"]["floating_objects"]] == [(0, ["dog"], [""], ["detect_closed"], [])]
    assert rows["other"]["objects"] == rows["other"]["floating_objects"] == []


def test_stuff_regions_from_ovss_become_objects_unless_they_duplicate_one():
    """With ``stuff_source``, level 1 adds the CASS stuff regions whose mask IoU with every object is below 0.5."""
    from grand_engine.io import rle as rle_io
    from grand_engine.stages.level1 import Level1
    from grand_engine.testing import make_unit

    h, w = 20, 30
    sky = np.zeros((h, w), dtype=bool)
    sky[:6] = True  # rows 0-5: no object there
    road = np.zeros((h, w), dtype=bool)
    road[10:, :] = True  # rows 10-19: a detector box covers the same pixels
    empty = {"boxes": [], "scores": [], "labels": []}
    detections = {
        "detect_closed": {"boxes": [[0.0, 10.0, 30.0, 20.0]], "scores": [0.9], "labels": ["car"]},
        **dict.fromkeys(("detect_lvis", "detect_ov", "detect_ov2", "sam_classify"), empty),
        "region_captions": {"boxes": [], "scores": [], "labels": [], "descriptions": []},
    }
    inputs = {name: [{"image_id": "a", **value}] for name, value in detections.items()}
    inputs["landmark"] = [{"image_id": "a", "category": None, "fine_category": None, "reason": None}]
    inputs["ovss"] = [
        {
            "image_id": "a",
            "labels": ["sky", "road"],
            "kinds": ["stuff", "stuff"],
            "scores": [0.8, 0.7],
            "areas": [int(sky.sum()), int(road.sum())],
            "boxes": [[0.0, 0.0, 30.0, 6.0], [0.0, 10.0, 30.0, 20.0]],
            "masks": [rle_io.encode(sky), rle_io.encode(road)],
        }
    ]
    unit = make_unit([{"image_id": "a", "width": w, "height": h}], inputs)
    stage = Level1.configure({"stuff_source": "ovss", "thresholds": {"detect_closed": 0.3}})
    assert "ovss" in stage.inputs()
    row = stage.process_image(unit, "a")
    # one detector alone: the car is a floating object; the road region covers its box exactly (IoU 1) and is
    # dropped, the sky is added as an object, and ids are renumbered objects first
    (stuff,) = row["objects"]
    (car,) = row["floating_objects"]
    assert stuff["labels"] == ["sky"] and stuff["sources"] == ["ovss"] and stuff["segmentation_source"] == "ovss"
    assert (stuff["id"], car["id"]) == (0, 1) and car["labels"] == ["car"]
    assert rle_io.decode(stuff["segmentation"]).sum() == sky.sum()
