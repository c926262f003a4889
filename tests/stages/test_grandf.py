"""``grandf`` (GCG records, spec §11) on hand-built level-4 rows with answers worked out by hand.

The scene (``tests/grandf/level4.py::scene_row``), caption ``"A brown dog chases a café ball near the old tree."``
(49 characters):

* ``"a brown dog"`` span [0, 11) → object 0 (mask): kept as ``"A brown dog"`` (the caption's own text);
* ``"café ball"`` [21, 30) (non-ASCII ``é``) → object 1 (mask); with a wrong span [3, 12) it is re-found there;
* ``"old tree."`` [40, 49) ends at the caption's end → floating object 2 has no mask → dropped ``no_mask``;
* ``"the sky"`` (added by the tests, no span) is not in the caption → dropped ``no_span``.
"""

from __future__ import annotations

import pytest

from grand_engine.stages.grandf import GRANDF_SCHEMA, GrandF, find_span, gcg_groundings, gcg_record
from grand_engine.testing import make_unit
from tests.grandf.level4 import CAPTION, H, W, box_mask, detail, level4_row, level4_table, obj, scene_row


def _unit(rows):
    images = [{"image_id": r["image_id"], "width": r["width"], "height": r["height"]} for r in rows]
    return make_unit(images, inputs={"level4": level4_table(rows)})


@pytest.mark.parametrize("cafe_span", [[21, 30], [3, 12], None])
def test_scene_record_spans_masks_and_drops(cafe_span):
    row = scene_row()
    row["dense_caption"]["details"][1]["tokens_positive"] = cafe_span
    row["dense_caption"]["details"].append(detail("the sky", None, [1]))
    rec = gcg_record(row, "sa_1.jpg")
    assert rec["caption"] == CAPTION and rec["skip_reason"] is None and rec["verification_status"] == "verified"
    assert [(g["phrase"], g["token_positives"], g["object_ids"]) for g in rec["groundings"]] == [
        ("A brown dog", [0, 11], [0]),
        ("café ball", [21, 30], [1]),
    ]
    assert rec["groundings"][0]["rle_masks"] == [row["objects"][0]["segmentation"]]
    assert rec["groundings"][1]["rle_masks"] == [row["objects"][1]["segmentation"]]
    assert rec["dropped_phrases"] == [
        {"phrase": "old tree.", "reason": "no_mask"},
        {"phrase": "the sky", "reason": "no_span"},
    ]
    for g in rec["groundings"]:
        s, e = g["token_positives"]
        assert CAPTION[s:e] == g["phrase"]


def test_short_caption_variant_uses_floating_masks():
    rec = gcg_record(scene_row(), "sa_1.jpg")
    first, second = rec["short_captions"]
    assert first["caption"] == "a dog and a cat"
    assert [(g["phrase"], g["token_positives"], g["object_ids"]) for g in first["groundings"]] == [
        ("a dog", [0, 5], [0]),
        ("a cat", [10, 15], [3]),  # floating object 3 has a mask: included
    ]
    assert second["caption"] == "Ünder a tree, a bird" and second["groundings"] == []
    assert second["dropped_phrases"] == [
        {"phrase": "a tree", "reason": "no_mask"},
        {"phrase": "a bird", "reason": "no_mask"},
    ]  # floating 2 and 4: no masks


def test_phrase_at_caption_end_with_mask_and_start_offset():
    m = box_mask(H, W, (0, 0, 4, 4))
    masks = {7: m}
    caption = "Tree by a lake"
    g, d = gcg_groundings(caption, [detail("lake", [10, 14], [7]), detail("tree", [0, 4], [7])], masks)
    assert [(x["phrase"], x["token_positives"]) for x in g] == [("Tree", [0, 4]), ("lake", [10, 14])]
    assert d == []


def test_overlap_duplicate_and_unknown_ids():
    m = box_mask(H, W, (0, 0, 4, 4))
    masks = {0: m, 1: m, 2: None}
    caption = "a man in a red shirt and a man"
    details = [
        detail("red shirt", [11, 20], [1]),  # inside "a man in a red shirt" [0, 20): overlap
        detail("a man in a red shirt", [0, 20], [0]),
        detail("a man", [25, 30], [1]),  # no earlier kept "a man" (the one at 0 overlaps): kept
        detail("a man", [0, 5], [0, 0, 1]),  # starts at 0 like the longer phrase: overlap (longer wins the tie)
        detail("a dog", None, [0]),  # no_span
        detail("shirt", [15, 20], [9]),  # unknown id
    ]
    g, d = gcg_groundings(caption, details, masks)
    assert [(x["phrase"], x["token_positives"], x["object_ids"]) for x in g] == [
        ("a man in a red shirt", [0, 20], [0]),
        ("a man", [25, 30], [1]),
    ]
    assert sorted((x["phrase"], x["reason"]) for x in d) == [
        ("a dog", "no_span"),
        ("a man", "overlap"),
        ("red shirt", "overlap"),
        ("shirt", "unknown_ids"),
    ]
    # Without overlap removal the nested phrases stay (ordered by start, longer first); "a man" at [0, 5) now
    # comes first, so the later "a man" at [25, 30) is the duplicate key.
    g2, d2 = gcg_groundings(caption, details, masks, drop_overlapping=False)
    assert [x["token_positives"] for x in g2] == [[0, 20], [0, 5], [11, 20]]
    assert [(x["phrase"], x["reason"]) for x in d2 if x["reason"] == "duplicate_phrase"] == [
        ("a man", "duplicate_phrase")
    ]


def test_duplicate_ids_collapse_and_partial_masks():
    m = box_mask(H, W, (0, 0, 4, 4))
    g, _ = gcg_groundings("two dogs", [detail("two dogs", [0, 8], [1, 2, 1, 3])], {1: m, 2: None, 3: m})
    assert g[0]["object_ids"] == [1, 3] and len(g[0]["rle_masks"]) == 2


def test_find_span_non_ascii_and_case():
    caption = "İstanbul at night, a café"
    # "İ".lower() is two code points: a search on the lower-cased caption would shift every later offset.
    assert find_span(caption, "a café", None) == (19, 25)
    assert caption[19:25] == "a café"
    # The given span's text lower-cases to 9 code points, so it is re-found by a case-insensitive search.
    assert find_span(caption, "istanbul", [0, 8]) == (0, 8)
    assert find_span(caption, "nowhere", None) is None
    assert find_span(caption, "", [0, 1]) is None
    assert find_span(caption, "at", [9, 11]) == (9, 11)
    assert find_span(caption, "at", [9, 30]) == (9, 11)  # a span past the end is ignored, the phrase re-found
    assert find_span(caption, None, [19, 25]) == (19, 25)


def test_wrong_mask_size_counts_as_no_mask():
    row = level4_row(
        "x",
        W,
        H,
        objects=[obj(0, (0, 0, 4, 4), "dog", mask=box_mask(H + 1, W, (0, 0, 4, 4)))],
        dense_caption={
            "caption": "a dog",
            "details": [detail("a dog", [0, 5], [0])],
            "verification": {"status": "verified"},
        },
    )
    rec = gcg_record(row, "x.jpg")
    assert rec["groundings"] == [] and rec["skip_reason"] == "no_grounded_phrase"
    assert rec["dropped_phrases"] == [{"phrase": "a dog", "reason": "no_mask"}]


@pytest.mark.parametrize(
    ("status", "verified_only", "skip"),
    [
        ("verified", True, None),
        ("failed", True, "verification_failed"),
        ("unchecked", True, "verification_unchecked"),
        ("failed", False, None),
    ],
)
def test_verification_gate(status, verified_only, skip):
    rec = gcg_record(scene_row(status=status), "sa_1.jpg", verified_only=verified_only)
    assert rec["skip_reason"] == skip
    assert len(rec["groundings"]) == 2  # the record is built either way; skip_reason says whether to export it


def test_stage_process_one_row_per_image():
    no_caption = level4_row("sa_2", W, H)
    stage = GrandF.configure()
    result = stage.process(_unit([scene_row("sa_1"), no_caption]))
    assert result.errors == []
    table = result.table
    assert table.schema.equals(GRANDF_SCHEMA, check_metadata=False)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert rows["sa_1"]["file_name"] == "sa_1.jpg" and rows["sa_1"]["width"] == W
    assert [g["phrase"] for g in rows["sa_1"]["groundings"]] == ["A brown dog", "café ball"]
    assert rows["sa_2"]["skip_reason"] == "no_dense_caption" and rows["sa_2"]["caption"] is None
    assert stage.inputs() == ("level4", "images")
    assert GrandF.configure({"source": "level3"}).inputs() == ("level3", "images")
    with pytest.raises(ValueError, match="source"):
        GrandF.configure({"source": "level2"})


def test_odd_values_are_dropped_phrases_not_crashes():
    odd = scene_row("sa_3")
    odd["dense_caption"]["details"][0]["ids"] = None
    odd["objects"][0]["segmentation"] = {"size": [H, W], "counts": None}  # unusable mask
    odd["dense_caption"]["details"].append(detail("the sky", None, [1]))
    result = GrandF.configure().process(_unit([odd]))
    rows = result.table.to_pylist()
    assert result.errors == []
    assert rows[0]["dropped_phrases"] == [
        {"phrase": "old tree.", "reason": "unknown_ids"},
        {"phrase": "a brown dog", "reason": "no_mask"},
        {"phrase": "the sky", "reason": "no_span"},
    ]
    assert [g["phrase"] for g in rows[0]["groundings"]] == ["café ball"]


def test_corrupt_row_becomes_an_error_row():
    bad = scene_row("sa_4")
    bad["objects"] = [None, *bad["objects"][1:]]
    result = GrandF.configure().process(_unit([bad, scene_row("sa_5")]))
    assert [e.image_id for e in result.errors] == ["sa_4"]
    assert result.table.column("image_id").to_pylist() == ["sa_5"]
