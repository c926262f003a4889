"""``level4``: the level-3 record plus the extra-context paragraph; a missing paragraph is an error row."""

from __future__ import annotations

import pytest

from grand_engine.stages.level3 import LEVEL3_SCHEMA, merge_level3
from grand_engine.stages.level4 import LEVEL4_SCHEMA, Level4, merge_level4
from grand_engine.testing import make_unit
from grand_engine.validate import validate_annotation
from tests.stages.test_level3 import grounded_row, level2_row, masks_row, verify_row

PARAGRAPH = "Kitchens are where meals are made. Dogs often wait there for scraps."


def level3_row(image_id):
    row = merge_level3(
        level2_row(image_id), grounded_row(image_id), masks_row(image_id)["masks"], verify_row(image_id)
    )
    row["image_id"] = image_id
    return row


def _extra(image_id, text=PARAGRAPH, finish="stop"):
    return {"image_id": image_id, "text": text, "finish_reason": finish, "attempts": 1, "max_tokens_used": 512}


def test_level4_is_level3_plus_additional_context():
    assert LEVEL4_SCHEMA.names == [*LEVEL3_SCHEMA.names, "additional_context"]
    row = merge_level4(level3_row("a"), _extra("a"))
    assert row["additional_context"] == PARAGRAPH
    assert row["dense_caption"]["verification"]["status"] == "verified"
    assert validate_annotation(row, 4) == []
    assert any("additional_context" in p for p in validate_annotation({**row, "additional_context": " "}, 4))


def test_stage_error_rows_for_missing_or_truncated_text():
    ids = ["ok", "none", "blank", "cut"]
    extra = [_extra("ok"), _extra("none", None), _extra("blank", "  \n"), _extra("cut", "Kitchens are", "length")]
    unit = make_unit(ids, inputs={"level3": [level3_row(i) for i in ids], "extra_context": extra})
    result = Level4.configure({"reject_truncated": True}).process(unit)
    assert result.table.schema.equals(LEVEL4_SCHEMA, check_metadata=False)
    assert result.table.column("image_id").to_pylist() == ["ok"]
    errors = {e.image_id: e.message for e in result.errors}
    assert "produced no text" in errors["none"] and "produced no text" in errors["blank"]
    assert "stopped at the token limit" in errors["cut"]
    assert validate_annotation(result.table.to_pylist()[0], 4) == []

    # by default a cut completion that extra_context chose to keep (accept_truncated) is kept
    default = Level4.configure().process(unit)
    assert default.table.column("image_id").to_pylist() == ["ok", "cut"]
    assert {e.image_id for e in default.errors} == {"none", "blank"}


def test_level4_refuses_a_level3_row_that_breaks_invariants():
    row = level3_row("x")
    row["objects"][0]["segmentation"] = None  # objects must have masks
    row["objects"][0]["segmentation_source"] = None
    unit = make_unit(["x"], inputs={"level3": [row], "extra_context": [_extra("x")]})
    result = Level4.configure().process(unit)
    assert result.table.num_rows == 0
    assert "has no mask" in result.errors[0].message
    with pytest.raises(ValueError, match="produced no text"):
        merge_level4(level3_row("y"), _extra("y", ""))
