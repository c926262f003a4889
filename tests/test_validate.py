"""The invariant validator on a valid row and on deliberately broken copies of it."""

from __future__ import annotations

import copy
import math

import pyarrow as pa
import pytest

from grand_engine import validate
from grand_engine.validate import InvariantError, assert_valid, register_check, validate_annotation, validate_table


def _obj(oid: int, bbox, labels, **extra):
    obj = {
        "id": oid,
        "bbox": bbox,
        "labels": labels,
        "qualifiers": [""] * len(labels),
        "label": None,
        "score": 0.9,
        "sources": ["detect_lvis"],
        "attributes": [],
        "depth": None,
        "depth_note": None,
        "segmentation": None,
        "segmentation_source": None,
    }
    obj.update(extra)
    return obj


def valid_row() -> dict:
    return {
        "image_id": "img1",
        "width": 640,
        "height": 480,
        "objects": [
            _obj(0, [10.0, 10.0, 100.0, 100.0], ["dog"], attributes=["a brown dog"]),
            _obj(1, [200.0, 50.0, 640.0, 480.0], ["person"]),
        ],
        "floating_objects": [_obj(2, [0.0, 0.0, 5.0, 5.0], ["cup", "mug"])],
        "floating_attributes": [{"bbox": [1.0, 1.0, 2.0, 2.0], "score": 0.8, "attributes": ["a red ball"]}],
        "landmark": {"category": "Indoor scene", "fine_category": "Living space"},
        "affordances": [{"category": "Contain-2", "description": None, "object_ids": [2], "labels": ["cup"]}],
    }


def valid_level3_row() -> dict:
    row = valid_row()
    for obj in row["objects"]:
        obj["label"] = obj["labels"][0]
        obj["segmentation"] = {"size": [480, 640], "counts": "abc"}
    row["relationships"] = [{"phrase": "a dog near a person", "object_ids": [0, 1]}]
    caption = "A dog sits next to a person."
    row["short_captions"] = [
        {
            "caption": caption,
            "details": [
                {"phrase": "A dog", "tokens_positive": [0, 5], "ids": [0], "bbox": [[10.0, 10.0, 100.0, 100.0]]},
                {"phrase": "a person", "tokens_positive": [19, 27], "ids": [1], "bbox": None},
            ],
        }
    ]
    row["dense_caption"] = {
        "caption": caption,
        "details": [{"phrase": "dog", "tokens_positive": [2, 5], "ids": [0], "bbox": [[10.0, 10.0, 100.0, 100.0]]}],
    }
    return row


def test_valid_rows_have_no_problems():
    assert validate_annotation(valid_row(), 1) == []
    assert validate_annotation(valid_level3_row(), 3) == []
    empty = {"image_id": "e", "width": 10, "height": 10, "objects": [], "floating_objects": []}
    assert validate_annotation(empty, 1) == []


def _broken(mutate, level: int = 1, row_factory=valid_row) -> list[str]:
    row = copy.deepcopy(row_factory())
    mutate(row)
    return validate_annotation(row, level)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["floating_objects"][0].update(id=1), "id 1 is also used by objects[1]"),
        (lambda r: r["floating_objects"][0].update(id=3), "floating object id 3 is not in 2..2"),
        (lambda r: r["objects"][1].update(id=2), "object id 2 is not in 0..1"),
        (lambda r: r["objects"][0].update(id=None), "id is None"),
        (lambda r: r["objects"][0].update(bbox=[10.0, math.nan, 100.0, 100.0]), "NaN/inf/null"),
        (lambda r: r["objects"][0].update(score=math.nan), "score is nan"),
        (lambda r: r["objects"][0].update(depth=math.inf), "depth is inf"),
        (lambda r: r["objects"][0].update(bbox=[10.0, 10.0, 641.0, 100.0]), "outside the 640x480 image"),
        (lambda r: r["objects"][0].update(bbox=[-1.0, 10.0, 100.0, 100.0]), "outside the 640x480 image"),
        (lambda r: r["objects"][0].update(bbox=[100.0, 10.0, 10.0, 100.0]), "inverted"),
        (lambda r: r["objects"][0].update(bbox=[1.0, 2.0]), "has 2 values"),
        (lambda r: r["objects"][0].update(label="cat"), "label 'cat' is not one of its labels"),
        (lambda r: r["objects"][0].update(labels=None), "labels is null"),
        (lambda r: r["objects"][0].update(qualifiers=["", ""]), "2 qualifiers for 1 labels"),
        (lambda r: r["objects"][0].update(attributes=None), "attributes is null"),
        (lambda r: r["affordances"][0].update(object_ids=[7]), "object id 7 does not exist"),
        (lambda r: r["affordances"][0].update(labels=["bowl"]), "label 'bowl' is not a label of its objects"),
        (lambda r: r["floating_attributes"][0].update(bbox=[0.0, 0.0, 9999.0, 1.0]), "floating_attributes[0]"),
        (lambda r: r["floating_attributes"][0].update(attributes=[]), "has no attribute text"),
        (lambda r: r.update(width=None), "width is None"),
        (lambda r: r.update(objects=None), "objects is null"),
        (
            lambda r: r["objects"][0].update(segmentation={"size": [640, 480], "counts": "x"}),
            "mask size [640, 480] differs",
        ),
    ],
)
def test_level1_invariants_catch_breakage(mutate, expected):
    problems = _broken(mutate)
    assert any(expected in p for p in problems), problems


def test_objects_listed_in_any_order_are_fine_but_ids_must_be_contiguous():
    row = valid_row()
    row["objects"].reverse()
    assert validate_annotation(row, 1) == []
    row = valid_row()
    row["floating_objects"].append(_obj(4, [0.0, 0.0, 1.0, 1.0], ["x"]))
    assert any("floating object id 4 is not in 2..3" in p for p in validate_annotation(row, 1))


@pytest.mark.parametrize(
    ("mutate", "level", "expected"),
    [
        (lambda r: r["relationships"][0].update(object_ids=[0, 9]), 2, "object id 9 does not exist"),
        (
            lambda r: r["short_captions"][0]["details"][0].update(tokens_positive=[0, 99]),
            2,
            "outside the caption (length 28)",
        ),
        (
            lambda r: r["short_captions"][0]["details"][0].update(tokens_positive=[1, 6]),
            2,
            "selects ' dog ', not the phrase 'A dog'",
        ),
        (lambda r: r["dense_caption"]["details"][0].update(ids=[5]), 2, "object id 5 does not exist"),
        (
            lambda r: r["dense_caption"]["details"][0].update(bbox=[[0.0, 0.0, 1.0, 1.0]]),
            2,
            "differs from object 0's bbox",
        ),
        (lambda r: r["dense_caption"]["details"][0].update(ids=[0, 1]), 2, "1 boxes for 2 ids"),
        (lambda r: r["objects"][1].update(segmentation=None), 3, "objects[1] (id 1): has no mask"),
    ],
)
def test_later_level_invariants(mutate, level, expected):
    problems = _broken(mutate, level, valid_level3_row)
    assert any(expected in p for p in problems), problems
    # the same breakage is not a level-1 problem
    assert _broken(mutate, 1, valid_level3_row) == []


def test_malformed_row_reports_instead_of_crashing():
    row = valid_row()
    row["affordances"] = [{"category": "x", "object_ids": "not-a-list-of-ints", "labels": []}]
    problems = validate_annotation(row, 1)
    assert problems and all(isinstance(p, str) for p in problems)


def test_assert_valid_names_image_and_invariant():
    good = valid_row()
    bad = valid_row()
    bad["image_id"] = "sa_42"
    bad["objects"][0]["bbox"] = [10.0, 10.0, 100.0, 500.0]
    assert_valid([good], 1)
    with pytest.raises(InvariantError) as info:
        assert_valid([good, bad], 1)
    assert "image 'sa_42'" in str(info.value) and "outside the 640x480 image" in str(info.value)
    assert list(info.value.problems) == ["sa_42"]


def test_assert_valid_accepts_arrow_tables():
    from grand_engine.stages.level1 import LEVEL1_SCHEMA

    row = valid_row()
    table = pa.Table.from_pylist([row], schema=LEVEL1_SCHEMA)
    assert validate_table(table, 1) == {}
    row["objects"][0]["id"] = 5
    table = pa.Table.from_pylist([row], schema=LEVEL1_SCHEMA)
    with pytest.raises(InvariantError, match="img1"):
        assert_valid(table, 1)


def test_register_check_extends_later_levels(monkeypatch):
    monkeypatch.setattr(validate, "_CHECKS", list(validate._CHECKS))

    @register_check(4)
    def _has_context(view):
        if not view.row.get("additional_context"):
            yield "additional_context is empty"

    row = valid_level3_row()
    assert validate_annotation(row, 3) == []
    assert validate_annotation(row, 4) == ["additional_context is empty"]
    assert (4, "has_context") in validate.registered_checks()


# -- checks added with levels 3 and 4 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "level", "expected"),
    [
        (lambda r: r["dense_caption"]["details"][0].update(match="fuzzy"), 2, "match 'fuzzy' is not one of"),
        (lambda r: r["dense_caption"]["details"][0].update(ids=[], bbox=None), 2, "grounded to no id"),
        (lambda r: r["objects"][0].update(segmentation_source="HQ_SAM"), 3, "segmentation_source 'HQ_SAM'"),
        (
            lambda r: r["floating_objects"][0].update(segmentation_source="sam"),
            3,
            "segmentation_source is 'sam' but it has no mask",
        ),
        (
            lambda r: r["short_captions"][0]["details"][0].update(tokens_positive=None),
            3,
            "tokens_positive is null",
        ),
        (lambda r: r.update(additional_context=None), 4, "additional_context is None"),
        (lambda r: r.update(additional_context="  "), 4, "additional_context is '  '"),
    ],
)
def test_level34_checks_catch_breakage(mutate, level, expected):
    problems = _broken(mutate, level, valid_level3_row)
    assert any(expected in p for p in problems), problems
    assert _broken(mutate, level - 1, valid_level3_row) == []  # each is new at its level


def test_level34_checks_accept_good_values():
    row = valid_level3_row()
    row["objects"][0]["segmentation_source"] = "sa1b"
    row["objects"][1]["segmentation_source"] = "detector"
    row["dense_caption"]["details"][0]["match"] = "noun"
    row["additional_context"] = "Dogs have lived beside people for thousands of years."
    assert validate_annotation(row, 4) == []
    assert validate.MATCH_KINDS == ("exact", "lemma", "embedding", "noun")
    assert validate.SEGMENTATION_SOURCES == ("sa1b", "detector", "sam", "ovss")
