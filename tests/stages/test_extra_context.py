"""``extra_context`` (spec §5): the object list with its 30-object cap, the prompt, the stage and its faults."""

from __future__ import annotations

import re

from grand_engine.stages.extra_context import (
    EXTRA_CONTEXT_SCHEMA,
    ExtraContext,
    extra_context_conversation,
    level4_pool,
    render_level4_objects,
)
from grand_engine.stages.llm_common import in_context_examples, stable_seed
from grand_engine.testing import make_unit
from tests.stages.scripted_llm import ScriptedLLM

LANDMARK = {"category": "Indoor scene", "fine_category": "Living_space"}


def obj(oid: int, label: str | None, attributes=(), labels=None) -> dict:
    return {
        "id": oid,
        "label": label,
        "labels": list(labels) if labels is not None else ([label] if label else []),
        "attributes": list(attributes),
    }


ROW = {
    "objects": [
        obj(0, "wine_glass", ["Assistant: a tall wine glass"]),
        obj(1, None, [], labels=["coffee table", "table"]),
        obj(2, "cat", ["", "a sleeping cat"]),
    ],
    "floating_objects": [obj(3, "lamp", ["a lamp"])],
    "landmark": LANDMARK,
}


def test_object_list_layout() -> None:
    # label (labels[0] when null) / first non-blank attribute with any "...:" prefix removed; underscores -> spaces
    assert render_level4_objects(ROW) == (
        "Objects:\nwine glass/a tall wine glass\ncoffee table\ncat/a sleeping cat\n\n"
        "Landmarks:\nIndoor scene, Living space"
    )


def test_floating_objects_when_there_are_no_objects_and_blocks_left_out() -> None:
    assert (
        render_level4_objects({**ROW, "objects": []})
        == "Objects:\nlamp/a lamp\n\nLandmarks:\nIndoor scene, Living space"
    )
    assert render_level4_objects({**ROW, "landmark": None}).endswith("cat/a sleeping cat")
    assert render_level4_objects({"objects": [], "landmark": LANDMARK}) == "Landmarks:\nIndoor scene, Living space"
    assert render_level4_objects({"objects": [], "landmark": {"category": "", "fine_category": ""}}) == ""


def test_cap_puts_attributed_objects_first_and_never_overshoots() -> None:
    # 5 of 35 have attributes: those 5 in pool order, then the first 25 plain ones
    few = [obj(i, f"thing{i}", ["big"] if i % 7 == 0 else []) for i in range(35)]
    ids = [o["id"] for o in level4_pool({"objects": few})]
    assert ids == [0, 7, 14, 21, 28] + [i for i in range(35) if i % 7][:25]
    # 32 of 35 have attributes: the cap still holds (the reference's negative slice let 33+ through, §14.37)
    many = [obj(i, f"thing{i}", [] if i in (1, 2, 3) else ["small"]) for i in range(35)]
    ids = [o["id"] for o in level4_pool({"objects": many})]
    assert ids == [i for i in range(35) if i not in (1, 2, 3)][:30]
    assert len(level4_pool({"objects": many}, max_objects=10)) == 10
    # at or below the cap nothing moves
    assert [o["id"] for o in level4_pool({"objects": few[:30]})] == list(range(30))


def test_prompt_and_examples() -> None:
    [message] = extra_context_conversation(render_level4_objects(ROW))
    text = message["content"]
    assert message["role"] == "user"
    assert text.index("##Example - 1:") < text.index("##Example - 2:") < text.index("5 to 7 sentences")
    assert text.endswith(
        "Prompt: Objects:\nwine glass/a tall wine glass\ncoffee table\ncat/a sleeping cat\n\n"
        "Landmarks:\nIndoor scene, Living space\nAdditional context:"
    )
    assert "Prompt: Objects:\nlighthouse/a white lighthouse with a red top\n" in text
    for scene in in_context_examples():
        assert f"Additional context: {scene['extra_context']}\n------" in text
        # the instruction forbids these words, so the examples must not use them
        assert not re.search(r"\bobjects?\b|\bscenes?\b|scene graph", scene["extra_context"], re.I)


def test_stage_rows_and_faults() -> None:
    sixteen = " ".join(f"Fact {i}." for i in range(16))
    llm = ScriptedLLM(context=["Cats like warm places. They nap a lot.", sixteen, "", ""])
    stage = ExtraContext.configure({"seed": 2}, resources={"batch_size": 32}, llm=llm)
    stage.setup()
    level2 = [
        {"image_id": "a", **ROW},
        {"image_id": "empty", "objects": [], "floating_objects": [], "landmark": None},
        {"image_id": "b", **ROW},
        {"image_id": "c", **ROW},
    ]
    unit = make_unit(["a", "empty", "b", "c"], inputs={"level2": level2})
    result = stage.process(unit)
    assert result.table.schema.equals(EXTRA_CONTEXT_SCHEMA, check_metadata=False)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert rows["a"] == {
        "image_id": "a",
        "text": "Cats like warm places. They nap a lot.",
        "finish_reason": "stop",
        "attempts": 1,
        "max_tokens_used": 512,
    }
    assert rows["b"]["text"] == " ".join(f"Fact {i}." for i in range(14)) and rows["b"]["finish_reason"] == "trimmed"
    assert [(e.image_id, e.error_type) for e in result.errors] == [
        ("empty", "NothingToDescribe"),
        ("c", "EmptyCompletion"),
    ]
    assert llm.calls[0]["seeds"] == [stable_seed(2, i, "extra_context") for i in ("a", "b", "c")]
