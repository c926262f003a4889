"""Label normalisation, vocabularies, person and affordance tables."""

from __future__ import annotations

import pytest

from grand_engine.labels import (
    GENDER_TO_PERSON,
    PERSON_PAIRS,
    PERSON_WORDS,
    Label,
    affordance_index,
    affordance_table,
    coco_vocabulary,
    gender_normalise,
    label_name,
    lvis_vocabulary,
    normalise_label,
    person_normalise,
    tag_vocabulary,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sandal_(type_of_shoe)", ("sandal", "type of shoe")),
        ("traffic_light", ("traffic light", "")),
        ("wine_glass", ("wine glass", "")),
        ("  Wine   Glass ", ("wine glass", "")),
        ("Band_Aid", ("band aid", "")),
        ("bow-tie", ("bow-tie", "")),
        ("pitcher_(vessel_for_liquid)", ("pitcher", "vessel for liquid")),
        ("monitor_(computer_equipment) computer_monitor", ("monitor", "computer equipment, computer monitor")),
        ("(toy)", ("toy", "")),
        ("", ("", "")),
        (None, ("", "")),
    ],
)
def test_normalise_label(raw, expected):
    assert normalise_label(raw) == expected
    assert label_name(raw) == expected[0]


def test_normalise_is_idempotent_on_names():
    for label in lvis_vocabulary():
        assert normalise_label(label.name) == (label.name, "")


def test_label_display():
    assert Label("sandal", "type of shoe").display == "sandal (type of shoe)"
    assert Label("dog").display == "dog"


def test_vocabularies():
    lvis = lvis_vocabulary()
    coco = coco_vocabulary()
    assert len(lvis) == 1203 and len(coco) == 80
    assert Label("sandal", "type of shoe") in lvis
    assert Label("traffic light") in coco and Label("person") == coco[0]
    assert all("_" not in lab.name and lab.name == lab.name.lower() for lab in (*lvis, *coco))
    tags = tag_vocabulary()
    assert len(tags) == len(set(tags))
    assert {"wine glass", "sandal", "traffic light", "sports ball", "hair drier"} <= set(tags)
    # LVIS first, then only the COCO names LVIS lacks
    assert tags[0] == lvis[0].name
    assert set(tags) == {lab.name for lab in (*lvis, *coco)}


REFERENCE_PERSON_DICT = {  # spec step 17 (utils/group_objects_utils.py), minus the pair-less adjective "elderly"
    "woman": "person", "women": "persons", "man": "person", "men": "persons", "child": "person",
    "children": "persons", "boy": "person", "boys": "persons", "girl": "person", "girls": "persons",
    "teenager": "person", "teenagers": "persons", "adult": "person", "adults": "persons", "senior": "person",
    "seniors": "persons", "male": "person", "females": "persons", "infant": "person", "infants": "persons",
    "toddler": "person", "toddlers": "persons", "youth": "person", "elders": "persons", "adolescent": "person",
    "adolescents": "persons", "baby": "person", "babies": "persons", "teen": "person", "kid": "person",
    "kids": "persons", "gentleman": "person", "gentlemen": "persons", "lady": "person", "ladies": "persons",
}  # fmt: skip


def test_person_words_are_symmetric():
    singular = {w for w, v in PERSON_WORDS.items() if v == "person"}
    plural = {w for w, v in PERSON_WORDS.items() if v == "persons"}
    assert singular.isdisjoint(plural)
    assert set(PERSON_WORDS) == singular | plural
    for s, p in PERSON_PAIRS:
        assert PERSON_WORDS[s] == "person" and PERSON_WORDS[p] == "persons"
    # every singular has a plural partner and vice versa
    assert {s for s, _ in PERSON_PAIRS} == singular
    assert {p for _, p in PERSON_PAIRS} == plural
    # the reference's gaps (spec §14.42) are filled
    assert PERSON_WORDS["female"] == "person" and PERSON_WORDS["males"] == "persons"


def test_person_words_keep_reference_mapping():
    for word, target in REFERENCE_PERSON_DICT.items():
        assert PERSON_WORDS[word] == target, word


def test_person_and_gender_normalise():
    assert person_normalise("Women") == "persons"
    assert person_normalise(" little  girl ") == " little  girl "  # multi-word labels are not person words
    assert person_normalise("girl") == "person"
    assert person_normalise("dog") == "dog"
    assert GENDER_TO_PERSON == {"man": "person", "woman": "person", "men": "person", "women": "person"}
    assert gender_normalise("Men") == "person"
    assert gender_normalise("boy") == "boy"  # level 1 maps only the four gender words


def test_affordance_table():
    table = affordance_table()
    assert len(table) == 39  # spec §12
    assert len({lab for cat in table for lab in cat.labels}) == 100
    assert table[0].category == "Play-1" and table[0].labels == ("violin", "cello", "erhu fiddle", "viola")
    assert all(cat.description is None for cat in table)  # the packaged file has no descriptions
    index = affordance_index()
    assert [table[i].category for i in index["bowl"]] == ["Contain-2", "Contain-3"]
    assert [table[i].category for i in index["baseball bat"]] == ["Hit", "Swing"]
    assert "dog" not in index
