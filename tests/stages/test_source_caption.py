"""``source_caption``: prompts, the caption checks, regeneration with feedback, error rows, seeds, a real tiny LLM."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa
import pytest

from grand_engine.models.llm import Completion
from grand_engine.runtime.stage import UnitInput
from grand_engine.sources.captions import check_phrase_caption, check_relation_caption
from grand_engine.stages.llm_common import stable_seed
from grand_engine.stages.source_caption import (
    SourceCaption,
    check_caption,
    example_turns,
    first_conversation,
    source_examples,
)
from grand_engine.stages.source_records import SOURCE_RECORDS_SCHEMA
from grand_engine.testing import run_stage

RECORD_TURN = 4  # two in-context examples, a user and an assistant turn each


class RecordLLM:
    """Answers by record: the first answer list whose key occurs in the record's turn (the one after the two
    in-context examples); round ``k`` (counted in user turns after that one) takes answer ``k - 1``. Records every
    call."""

    def __init__(self, answers: dict[str, Sequence[str | Completion]]) -> None:
        self.answers = answers
        self.calls: list[dict] = []

    def chat(self, conversations, *, max_new_tokens, temperature, top_p, seed):
        seeds = list(seed) if not isinstance(seed, int) else [seed] * len(conversations)
        self.calls.append({"conversations": conversations, "seeds": seeds, "max_new_tokens": max_new_tokens})
        out = []
        for conv in conversations:
            record = conv[RECORD_TURN]["content"]
            key = next(k for k in self.answers if k in record)
            answer = self.answers[key][sum(1 for m in conv[RECORD_TURN:] if m["role"] == "user") - 1]
            out.append(answer if isinstance(answer, Completion) else Completion(answer, "stop"))
        return out


def relation_row(
    image_id: str,
    names: list[str],
    labels: list[str],
    triples: list[tuple[str, str, str]],
    captions: list[str] | None = None,
) -> dict:
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
        "width": 40,
        "height": 30,
        "dataset": "openpsg",
        "split": "train",
        "kind": "relation",
        "source_key": image_id,
        "captions": captions or [],
        "entities": [
            {"key": n, "label": lab, "object_id": i, "bbox": [0, 0, 5, 5]}
            for i, (n, lab) in enumerate(zip(names, labels, strict=True))
        ],
        "relations": [{"subject": s, "predicate": p, "object": o} for s, p, o in triples],
        "dropped": [],
    }


def phrase_row(image_id: str, phrases: list[str], captions: list[str] | None = None) -> dict:
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
        "width": 40,
        "height": 30,
        "dataset": "refcocog",
        "split": "train",
        "kind": "phrase",
        "source_key": image_id,
        "captions": captions or [],
        "entities": [{"key": p, "label": "", "object_id": i, "bbox": [0, 0, 5, 5]} for i, p in enumerate(phrases)],
        "relations": [],
        "dropped": [],
    }


def unit_of(*rows: dict) -> UnitInput:
    return UnitInput("s/00000", pa.Table.from_pylist(list(rows), schema=SOURCE_RECORDS_SCHEMA))


CAT = relation_row(
    "psg_1",
    ["cat-1", "blanket-1"],
    ["cat", "blanket"],
    [("cat-1", "lying on", "blanket-1")],
    ["A tabby cat on a blanket."],
)
PEOPLE = relation_row("psg_2", ["person-1", "person-2"], ["person", "person"], [("person-1", "beside", "person-2")])
MAN = phrase_row("ref_1", ["the man on the left", "a woman in red"])


# -- prompts ----------------------------------------------------------------------------------------------------


def test_relation_conversation_shows_the_examples_as_turns_then_the_record():
    conv = first_conversation(CAT)
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant", "user"]
    examples = source_examples()["relation"]
    assert conv[1]["content"] == examples[0]["caption"] and conv[3]["content"] == examples[1]["caption"]
    assert "- [person-2, holding, knife-1]" in conv[2]["content"]  # the second example's triples
    text = conv[RECORD_TURN]["content"]
    assert "(person-1 stays person-1)" in text and "$" not in text
    assert text.endswith("Captions:\n- A tabby cat on a blanket.\nRelationships:\n- [cat-1, lying on, blanket-1]")
    assert conv[0]["content"].split("Captions:")[0] == text.split("Captions:")[0]  # every user turn has the rules
    assert example_turns("relation")[0] == (conv[0]["content"], conv[1]["content"])


def test_phrase_conversation_lists_the_phrases():
    conv = first_conversation(MAN)
    text = conv[RECORD_TURN]["content"]
    assert text.endswith("Phrases:\n- the man on the left\n- a woman in red")
    assert "word for word" in text and "Do not infer an action or a relation" in text
    assert conv[1]["content"] == source_examples()["phrase"][0]["caption"]
    assert all("Relationships:" not in m["content"] for m in conv)


def test_every_in_context_example_passes_the_checks_it_teaches():
    examples = source_examples()
    for ex in examples["relation"]:
        names = sorted({n for s, _, o in ex["relations"] for n in (s, o)})
        labels = [n.rsplit("-", 1)[0] for n in names]
        assert check_relation_caption(ex["caption"], names, labels).ok, ex["caption"]
    for ex in examples["phrase"]:
        assert check_phrase_caption(ex["caption"], ex["phrases"]).ok, ex["caption"]


# -- checks, regeneration and error rows --------------------------------------------------------------------------


def stage_with(llm: RecordLLM, **params) -> SourceCaption:
    return SourceCaption.configure(params, resources={"batch_size": 8}, llm=llm)


def test_accepted_first_round_rows():
    llm = RecordLLM(
        {
            "cat-1": ["A cat-1 is lying on a blanket-1."],
            "person-1": ['"Person-1 stands beside person-2."'],
            "the man on the left": ["There is the man on the left. A woman in red stands apart."],
        }
    )
    result = run_stage(stage_with(llm), unit_of(CAT, PEOPLE, MAN))
    assert result.errors == []
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert rows["psg_1"]["caption"] == "A cat is lying on a blanket."
    assert rows["psg_1"]["completion"] == "A cat-1 is lying on a blanket-1."
    assert rows["psg_1"]["spans"] == [
        {"key": "cat-1", "phrase": "cat", "start": 2, "end": 5},
        {"key": "blanket-1", "phrase": "blanket", "start": 20, "end": 27},
    ]
    assert rows["psg_2"]["caption"] == "Person 1 stands beside person 2."  # quotes stripped, labels numbered
    assert rows["ref_1"]["spans"][1] == {"key": "a woman in red", "phrase": "A woman in red", "start": 30, "end": 44}
    assert [rows[k]["rounds"] for k in ("psg_1", "psg_2", "ref_1")] == [1, 1, 1]
    assert rows["psg_1"]["finish_reason"] == "stop" and rows["psg_1"]["rejected"] == []
    # relation and phrase records go to the LLM in separate calls (their stop lines differ); seeds are per image
    assert [len(c["conversations"]) for c in llm.calls] == [2, 1]
    assert llm.calls[0]["seeds"] == [
        stable_seed(0, "psg_1", "source_caption"),
        stable_seed(0, "psg_2", "source_caption"),
    ]


def test_a_rejected_caption_is_regenerated_with_feedback():
    llm = RecordLLM({"the man on the left": ["A man waits.", "The man on the left and a woman in red."]})
    result = run_stage(stage_with(llm), unit_of(MAN))
    (row,) = result.table.to_pylist()
    assert row["rounds"] == 2 and row["caption"] == "The man on the left and a woman in red."
    assert row["rejected"] == ["round 1: it leaves out 'the man on the left', 'a woman in red'"]
    second = llm.calls[1]["conversations"][0][RECORD_TURN:]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == "A man waits."
    assert second[2]["content"].startswith("Your description breaks the rules: it leaves out 'the man on the left'")
    assert llm.calls[1]["seeds"] == [stable_seed(0, "ref_1", "source_caption", "round", 2)]


def test_a_record_still_rejected_after_the_last_round_is_an_error_row():
    llm = RecordLLM(
        {
            "the man on the left": ["A man.", "A man again.", "Still a man."],
            "cat-1": ["A cat-1 on a blanket-1 near dog-4.", "A cat-1 and blanket-1 and dog-4."],
        }
    )
    result = run_stage(stage_with(llm, max_rounds=2), unit_of(MAN, CAT))
    assert result.table.num_rows == 0
    errors = {e.image_id: e for e in result.errors}
    assert errors["ref_1"].error_type == "PhraseMissing"  # a phrase the LLM dropped
    assert errors["ref_1"].message == (
        "ref_1: no caption passed the checks in 2 round(s): round 1: it leaves out 'the man on the left', "
        "'a woman in red' | round 2: it leaves out 'the man on the left', 'a woman in red'; "
        "last caption: 'A man again.'"
    )
    assert errors["psg_1"].error_type == "CaptionRejected" and "'dog-4'" in errors["psg_1"].message
    assert len(llm.calls) == 2 * 2  # two rounds, a relation call and a phrase call each


def test_an_unusable_completion_is_an_error_row_naming_the_round():
    llm = RecordLLM({"the man on the left": [Completion("", "stop"), Completion("", "stop")]})
    result = run_stage(stage_with(llm), unit_of(MAN))
    (error,) = result.errors
    assert error.error_type == "EmptyCompletion" and error.message.startswith("source caption (round 1)")


def test_use_source_sentence_skips_the_llm_when_the_sentence_passes():
    ok = phrase_row("flickr_1_0", ["Two men", "a bench"], ["Two men sit on a bench ."])
    bad = phrase_row("flickr_1_1", ["The men", "red hats"], ["The men wear hats ."])
    llm = RecordLLM({"The men": ["The men wear red hats."]})
    result = run_stage(stage_with(llm, use_source_sentence=True), unit_of(ok, bad))
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert rows["flickr_1_0"]["from_source"] and rows["flickr_1_0"]["rounds"] == 0
    assert rows["flickr_1_0"]["caption"] == "Two men sit on a bench ." and rows["flickr_1_0"]["finish_reason"] is None
    assert not rows["flickr_1_1"]["from_source"] and rows["flickr_1_1"]["rounds"] == 1
    assert len(llm.calls) == 1 and len(llm.calls[0]["conversations"]) == 1


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="max_rounds"):
        SourceCaption.configure({"max_rounds": 0})
    with pytest.raises(ValueError, match="surface"):
        SourceCaption.configure({"surface": "nice"})
    assert check_caption(CAT, "cat-1 on blanket-1", "name").caption == "cat-1 on blanket-1"


# -- a real tiny LLM ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from grand_engine.models import tiny

    dest = tmp_path_factory.mktemp("tiny")
    tiny.build_one("llama", dest)
    return dest / "llama"


def test_random_tiny_llama_captions_are_rejected_with_error_rows(tiny_llama):
    """The random Llama writes random tokens: through the real adapter, every round is rejected and the record ends
    as an error row that lists each round's problems."""
    from grand_engine.config import ModelSpec

    stage = SourceCaption.configure(
        {"max_tokens": 8, "retry_max_tokens": 12, "accept_truncated": True, "max_rounds": 2},
        models={"llm": ModelSpec(id=str(tiny_llama), family="llm", dtype="float32")},
        resources={"batch_size": 4},
    )
    result = run_stage(stage, unit_of(CAT, MAN))
    assert result.table.num_rows == 0
    assert {e.image_id: e.error_type for e in result.errors} == {"psg_1": "PhraseMissing", "ref_1": "PhraseMissing"}
    for error in result.errors:
        assert re.search(r"round 1: .* \| round 2: ", error.message)
