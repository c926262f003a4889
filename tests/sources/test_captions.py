"""Caption checks and exact spans (``grand_engine.sources.spans`` and ``grand_engine.sources.captions``)."""

from __future__ import annotations

import pytest

from grand_engine.sources.captions import (
    Span,
    check_phrase_caption,
    check_relation_caption,
    normalise_caption,
    surface_texts,
)
from grand_engine.sources.spans import (
    collapse,
    entity_names,
    first_occurrence,
    overlaps,
    strip_quotes,
    word_bounded,
    word_occurrences,
)

# -- text rules -------------------------------------------------------------------------------------------------


def test_collapse_and_strip_quotes_reach_a_fixed_point_of_the_loaders_strip():
    assert collapse("  a\n\n b \t c ") == "a b c"
    for text in ['"A cat."', '" "A cat." "', 'He said "hi"', '""']:
        out = strip_quotes(text)
        assert out.strip('"').strip() == out  # GLaMM's strip leaves the caption as is
    assert strip_quotes('" "A cat." "') == "A cat."
    assert strip_quotes('He said "hi"') == 'He said "hi'
    assert normalise_caption(' "A man\nwaves." ') == "A man waves."


def test_word_bounded_occurrences():
    text = "A woman and a man; person-12 and person-1."
    assert first_occurrence(text, "MAN") == 4  # inside "woman": what str.find gives
    assert not word_bounded(text, 4, 7)
    assert word_occurrences(text, "man") == [14]
    assert word_occurrences(text, "person-1") == [33]  # not inside person-12
    assert word_occurrences(text, "") == []
    assert entity_names("person-1 sits; the dining table-2 is old, e-mail 3-d") == [
        ("person-1", 0, 8),
        ("table-2", 26, 33),
    ]


def test_overlaps_include_touching_spans():
    assert overlaps([(0, 5), (6, 9)]) == []
    assert overlaps([(6, 9), (0, 6)]) == [(1, 0)]  # end 6 >= start 6: the RefCOCOg loader would trim it
    assert overlaps([(0, 10), (2, 4)]) == [(0, 1)]


# -- phrase records -------------------------------------------------------------------------------------------


def test_phrase_caption_spans_are_first_occurrences_with_the_captions_case():
    check = check_phrase_caption(
        '"A man in red stands. The woman waits near a man in red."', ["a man in red", "the woman"]
    )
    assert check.ok and check.caption == "A man in red stands. The woman waits near a man in red."
    assert check.spans == [Span("a man in red", "A man in red", 0, 12), Span("the woman", "The woman", 21, 30)]
    for span in check.spans:
        assert check.caption[span.start : span.end] == span.phrase


def test_phrase_caption_problems():
    missing = check_phrase_caption("A man stands.", ["a man", "a red car"])
    assert not missing.ok and missing.missing == ["a red car"] and "leaves out 'a red car'" in missing.problems[0]
    inside = check_phrase_caption("The woman and the man.", ["man"])
    assert inside.missing == [] and "inside another word" in inside.problems[0]
    touching = check_phrase_caption("a red car park", ["a red car", "car park"])
    assert any("overlap or touch" in p for p in touching.problems)
    assert check_phrase_caption("  ", ["x"]).problems == ["it is empty"]


# -- relation records -----------------------------------------------------------------------------------------


def test_surface_texts():
    names, labels = ["person-1", "person-2", "dining table-1"], ["person", "person", "dining table"]
    assert surface_texts(names, labels) == {
        "person-1": "person 1",
        "person-2": "person 2",
        "dining table-1": "dining table",
    }
    assert surface_texts(names, labels, "name") == {n: n for n in names}
    # a label that equals another entity's numbered surface would make two phrases alike: names are kept
    assert surface_texts(["person 1-1", "person-1", "person-2"], ["person 1", "person", "person"]) == {
        "person 1-1": "person 1-1",
        "person-1": "person-1",
        "person-2": "person-2",
    }
    with pytest.raises(ValueError, match="surface"):
        surface_texts(names, labels, "other")


def test_relation_caption_is_rewritten_with_exact_spans():
    text = "Person-1 stands beside person-2. Person-2 stands on the dining table-1."
    check = check_relation_caption(
        text, ["person-1", "person-2", "dining table-1"], ["person", "person", "dining table"]
    )
    assert check.ok
    assert check.written == text
    assert check.caption == "Person 1 stands beside person 2. Person 2 stands on the dining table."
    assert check.spans == [
        Span("person-1", "Person 1", 0, 8),
        Span("person-2", "person 2", 23, 31),
        Span("dining table-1", "dining table", 56, 68),
    ]
    for span in check.spans:
        assert check.caption[span.start : span.end] == span.phrase
    single = check_relation_caption("A cat-1 lies on a blanket-1.", ["cat-1", "blanket-1"], ["cat", "blanket"])
    assert single.caption == "A cat lies on a blanket." and [s.phrase for s in single.spans] == ["cat", "blanket"]
    kept = check_relation_caption("A cat-1 lies on a blanket-1.", ["cat-1", "blanket-1"], ["cat", "blanket"], "name")
    assert kept.caption == "A cat-1 lies on a blanket-1." and kept.spans[1] == Span("blanket-1", "blanket-1", 18, 27)


def test_relation_caption_problems():
    names, labels = ["person-1", "table-1", "dining table-1"], ["person", "table", "dining table"]
    missing = check_relation_caption("A person-1 sits at the dining table-1.", names, labels)
    assert missing.missing == ["table-1"]  # the table-1 inside "dining table-1" does not count
    added = check_relation_caption("person-1 at table-1 and dining table-1 with dog-2.", names, labels)
    assert added.missing == [] and added.problems == ["it names 'dog-2', which the relationships do not"]
    renamed = check_relation_caption("A person sits at a table.", ["person-1"], ["person"])
    assert renamed.missing == ["person-1"] and renamed.spans == []
