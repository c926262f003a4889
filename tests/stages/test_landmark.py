"""``landmark``: answer parsing and prompts worked out by hand from spec step 1, the two-step wiring, and both
methods run on tiny real models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.stages.landmark import (
    LANDMARK_SCHEMA,
    LANDMARK_TAXONOMY,
    LandmarkStage,
    parse_choice,
    question_seed,
    render_options,
)
from grand_engine.testing import make_unit

COARSE = list(LANDMARK_TAXONOMY)
TRANSPORT = LANDMARK_TAXONOMY["Transportation scene"]


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "a": rng.integers(0, 256, (60, 80, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (90, 50, 3), dtype=np.uint8),
    }


# -- parsing (spec step 1: lower-cased answer, first option in list order that is a substring) --------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Outdoor scene", "Outdoor scene"),
        ("  The image shows an INDOOR   scene.\n", "Indoor scene"),
        ("outdoor scene or indoor scene", "Indoor scene"),  # both named: list order decides, not answer order
        ("Sports and recreation scene", "Sports and recreation scene"),
        ("2", "Outdoor scene"),  # a bare option number (deviation: the reference ignored numbers)
        ("(3)", "Transportation scene"),
        ("Option 4.", "Sports and recreation scene"),
        ("5", None),  # no fifth option
        ("0", None),
        ("a kitchen", None),
        ("", None),
        (None, None),
        ("indoor", None),  # the whole option name must appear
        ("2 people are outdoors", None),  # a number inside a sentence is not an answer
    ],
)
def test_parse_coarse(answer, expected):
    assert parse_choice(answer, COARSE) == expected


def test_parse_fine_uses_substring_in_list_order():
    assert parse_choice("Train Station", TRANSPORT) == "Train station"
    assert parse_choice("a port and harbor near an airport", TRANSPORT) == "Airport"  # Airport is listed first
    assert parse_choice("railroad", TRANSPORT) == "Road"  # plain substring, as the reference
    assert parse_choice("harbor", TRANSPORT) is None


def test_taxonomy_is_the_reference_4_by_14():
    assert COARSE == ["Indoor scene", "Outdoor scene", "Transportation scene", "Sports and recreation scene"]
    assert sum(len(v) for v in LANDMARK_TAXONOMY.values()) == 14
    assert LANDMARK_TAXONOMY["Outdoor scene"] == ("Urban landscape", "Rural landscape", "Natural landscape")


def test_prompts_render_numbered_options():
    stage = LandmarkStage.configure({})
    assert render_options(["A b", "C"]) == "1. A b\n2. C"
    coarse = stage.coarse_question()
    assert "1. Indoor scene\n2. Outdoor scene\n3. Transportation scene\n4. Sports and recreation scene" in coarse
    fine = stage.fine_question("Transportation scene")
    assert "transportation scene" in fine
    assert "1. Road\n2. Airport\n3. Train station\n4. Port and harbor" in fine
    assert "$" not in coarse + fine


def test_seeds_are_stable_and_distinct_per_question():
    assert question_seed(0, "sa_1", "coarse") == question_seed(0, "sa_1", "coarse")
    assert (
        len({question_seed(0, "sa_1", "coarse"), question_seed(0, "sa_1", "fine"), question_seed(1, "sa_1", "coarse")})
        == 3
    )


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="method"):
        LandmarkStage.configure({"method": "llm"})
    with pytest.raises(ValueError, match="clip_template"):
        LandmarkStage.configure({"method": "clip", "clip_template": "a photo"})


# -- two-step wiring with scripted answers ---------------------------------------------------------------


@dataclass
class _Answer:
    text: str
    finish_reason: str = "stop"


class ScriptedVLM:
    """Answers each prompt from a script keyed by (question kind, image index); records the calls."""

    def __init__(self, coarse: list[str], fine: dict[int, str]) -> None:
        self.coarse, self.fine, self.calls = coarse, fine, []

    def generate(self, images, prompts, **kwargs):
        self.calls.append((len(images), list(prompts), kwargs))
        if len(self.calls) == 1:
            return [_Answer(a, "length" if a.endswith("...") else "stop") for a in self.coarse[: len(images)]]
        return [_Answer(self.fine[k]) for k in sorted(self.fine)][: len(images)]


def test_fine_question_only_for_parsed_coarse_answers(images):
    stage = LandmarkStage.configure(
        {"temperature": 0.2, "seed": 7},
        model=ScriptedVLM(coarse=["I am not sure...", "Transportation scene"], fine={1: "It is a train station."}),
    )
    rows = stage.classify_vlm(make_unit(images), ["a", "b"])
    assert rows[0] == {
        "image_id": "a",
        "category": "",
        "fine_category": "",
        "reason": "the coarse answer matched no option (cut at max_new_tokens): 'I am not sure...'",
    }
    assert rows[1] == {
        "image_id": "b",
        "category": "Transportation scene",
        "fine_category": "Train station",
        "reason": None,
    }
    (n1, prompts1, kw1), (n2, prompts2, kw2) = stage.model.calls
    assert n1 == 2 and n2 == 1  # the unparsed image gets no fine question
    assert prompts2 == [stage.fine_question("Transportation scene")]
    assert kw1["do_sample"] is True and kw1["temperature"] == 0.2 and kw1["max_new_tokens"] == 1024
    assert kw1["seed"] == [question_seed(7, "a", "coarse"), question_seed(7, "b", "coarse")]
    assert kw2["seed"] == [question_seed(7, "b", "fine")]


def test_unparsed_fine_answer_keeps_the_category(images):
    stage = LandmarkStage.configure({}, model=ScriptedVLM(coarse=["Outdoor scene"], fine={0: "a beach"}))
    (row,) = stage.classify_vlm(make_unit(images), ["a"])
    assert row["category"] == "Outdoor scene" and row["fine_category"] == ""
    assert row["reason"] == "the fine answer for 'Outdoor scene' matched no option: 'a beach'"


def test_greedy_when_temperature_is_zero(images):
    stage = LandmarkStage.configure({"temperature": 0.0}, model=ScriptedVLM(coarse=["x"], fine={}))
    stage.classify_vlm(make_unit(images), ["a"])
    assert stage.model.calls[0][2]["do_sample"] is False


# -- tiny real models ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vlm_stage(tiny_dir):
    stage = LandmarkStage.configure(
        {"max_new_tokens": 6}, models={"vlm": ModelSpec(id=str(tiny_dir / "llava"), family="vlm")}
    )
    stage.setup()
    return stage


def test_vlm_method_on_tiny_llava(vlm_stage, images):
    result = vlm_stage.process(make_unit(images))
    assert result.errors == []
    assert result.table.schema.equals(LANDMARK_SCHEMA, check_metadata=True)
    for row in result.table.to_pylist():
        # whatever the random model says, the row is consistent: a parsed category, or "" with a reason
        if row["category"] == "":
            assert row["fine_category"] == "" and row["reason"].startswith("the coarse answer matched no option")
        else:
            assert row["category"] in LANDMARK_TAXONOMY
            assert row["fine_category"] in ("", *LANDMARK_TAXONOMY[row["category"]])
            assert (row["reason"] is None) == (row["fine_category"] != "")


def test_vlm_answers_do_not_depend_on_the_batch(vlm_stage, images):
    unit = make_unit(images)
    together = vlm_stage.process(unit).table.to_pylist()
    one_by_one = [row for i in unit.image_ids for row in vlm_stage.process_batch(unit, [i])]
    assert together == one_by_one


def test_clip_method_on_tiny_clip(tiny_dir, images):
    stage = LandmarkStage.configure(
        {"method": "clip"}, models={"clip": ModelSpec(id=f"local-dir:{tiny_dir / 'clip-vit'}", family="clip")}
    )
    stage.setup()
    rows = stage.process(make_unit(images)).table.to_pylist()
    assert [r["image_id"] for r in rows] == ["a", "b"]
    for row in rows:
        assert row["category"] in LANDMARK_TAXONOMY
        assert row["fine_category"] in LANDMARK_TAXONOMY[row["category"]]
        assert row["reason"] is None


def test_setup_needs_the_slot_of_the_method(tiny_dir):
    stage = LandmarkStage.configure(
        {"method": "clip"}, models={"vlm": ModelSpec(id=str(tiny_dir / "llava"), family="vlm")}
    )
    with pytest.raises(ValueError, match="'clip' slot"):
        stage.setup()
