"""The three dataset readers on the hand-built fixtures of ``tests/sources/fixtures.py`` (answers worked out there)."""

from __future__ import annotations

import json

import pytest

from grand_engine.io import rle
from grand_engine.sources.flickr30k import parse_annotation, parse_sentence, read_flickr30k, union_box
from grand_engine.sources.openpsg import read_openpsg, readable_label
from grand_engine.sources.refcocog import read_refcocog
from tests.sources.fixtures import SENTENCES_1001, write_flickr30k, write_jpeg, write_openpsg, write_refcocog


def by_id(records):
    return {r.record_id: r for r in records}


# -- OpenPSG ----------------------------------------------------------------------------------------------------


def test_readable_labels_of_coco_panoptic_names():
    assert readable_label("tree-merged") == "tree"
    assert readable_label("sky-other-merged") == "sky"
    assert readable_label("wall-brick") == "brick wall"
    assert readable_label("floor-wood") == "wood floor"
    assert readable_label("window-blind") == "window blind"
    assert readable_label("door-stuff") == "door"
    assert readable_label("dining table") == "dining table"
    assert readable_label("traffic_light") == "traffic light"


def test_openpsg_entities_relations_masks_captions_and_splits(tmp_path):
    records = by_id(read_openpsg(**write_openpsg(tmp_path)))
    assert list(records) == ["psg_1", "psg_2", "psg_3"]
    one = records["psg_1"]
    assert (one.kind, one.split, one.file_name, one.width, one.height) == (
        "relation",
        "train",
        "000000000001.jpg",
        40,
        30,
    )
    assert one.image_path == str(tmp_path / "train2017/000000000001.jpg")
    assert one.captions == ["Two people stand by a table."]  # whitespace collapsed, the empty caption dropped
    # wall-1 is in no relation, so it is not an entity; the second "beside" triple is a duplicate
    assert [e.key for e in one.entities] == ["person-1", "person-2", "dining table-1"]
    assert [(r.subject, r.predicate, r.object) for r in one.relations] == [
        ("person-1", "beside", "person-2"),
        ("person-2", "standing on", "dining table-1"),
    ]
    assert one.dropped == [{"phrase": "person-1 beside person-2", "reason": "duplicate_relation"}]
    person1, person2, table = one.entities
    assert [int(rle.area(e.segmentation)[0]) for e in one.entities] == [200, 200, 160]
    assert person1.bbox == [5.0, 5.0, 15.0, 25.0] and table.bbox == [0.0, 26.0, 40.0, 30.0]
    assert (person1.object_id, person2.label, table.label) == (2, "person", "dining table")
    two = records["psg_2"]
    assert two.split == "val" and two.captions == []
    assert [(e.key, int(rle.area(e.segmentation)[0])) for e in two.entities] == [("blanket-1", 600), ("cat-1", 600)]
    three = records["psg_3"]
    assert three.error_type == "NoRelation" and "psg_3" in three.error


def test_openpsg_bad_input_becomes_error_records_or_drops(tmp_path):
    paths = write_openpsg(tmp_path)
    doc = json.loads(paths["psg_json"].read_text())
    doc["data"][0]["relations"].append([1, 17, 0])  # an object index past segments_info
    doc["data"][0]["segments_info"].append({"id": 55, "category_id": 0})  # id absent from the PNG
    doc["data"][0]["relations"].append([1, 4, 0])  # names that empty segment
    doc["data"][1]["pan_seg_file_name"] = "panoptic_train2017/missing.png"
    doc["data"][2]["height"] = 31  # with a relation, the PNG size (30) disagrees
    doc["data"][2]["relations"] = [[0, 0, 0]]
    paths["psg_json"].write_text(json.dumps(doc))
    records = by_id(read_openpsg(**paths))
    one = records["psg_1"]
    assert [e.key for e in one.entities] == ["person-1", "person-2", "dining table-1"]
    reasons = [d["reason"] for d in one.dropped]
    assert reasons.count("unknown_entity") == 2 and "empty_mask" in reasons  # person-3 has no pixel
    assert records["psg_2"].error_type == "MissingPanoptic" and "missing.png" in records["psg_2"].error
    assert records["psg_3"].error_type == "PanopticSizeMismatch"


def test_openpsg_refuses_a_file_that_is_not_psg(tmp_path):
    path = tmp_path / "psg.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not an OpenPSG file"):
        list(read_openpsg(path, tmp_path))


# -- RefCOCOg ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("refs_format", ["pickle", "json", "parquet"])
def test_refcocog_phrases_regions_splits_and_drops(tmp_path, refs_format):
    records = by_id(read_refcocog(**write_refcocog(tmp_path, refs_format), splits=("train", "val")))
    assert list(records) == ["refcocog_11_train", "refcocog_12_val"]  # the test ref is left out
    rec = records["refcocog_11_train"]
    assert (rec.kind, rec.file_name, rec.width, rec.height) == ("phrase", "COCO_train2014_000000000011.jpg", 40, 30)
    man, woman = rec.entities
    assert man.key == "the man on the left" and woman.key == "a woman in red."  # raw used, lower-cased
    assert man.polygons == [[5.0, 5.0, 15.0, 5.0, 15.0, 25.0, 5.0, 25.0]]  # the 2-number polygon removed
    assert man.segmentation is None and man.bbox == [5.0, 5.0, 15.0, 25.0] and man.label == "person"
    assert woman.polygons is None and int(rle.area(woman.segmentation)[0]) == 200  # the crowd RLE
    assert sorted((d["phrase"], d["reason"]) for d in rec.dropped) == [
        ("", "empty_phrase"),
        ("a dog", "unknown_annotation"),
    ]
    assert records["refcocog_12_val"].split == "val"


def test_refcocog_unknown_image_is_an_error_record(tmp_path):
    paths = write_refcocog(tmp_path, "json")
    refs = json.loads(paths["refs_path"].read_text())
    refs.append({"ref_id": 9, "ann_id": 101, "image_id": 77, "split": "train", "sentences": [{"sent": "x y"}]})
    paths["refs_path"].write_text(json.dumps(refs))
    records = by_id(read_refcocog(**paths, splits=("train",)))
    assert records["refcocog_77_train"].error_type == "UnknownImage"


# -- Flickr30K Entities -----------------------------------------------------------------------------------------


def test_parse_sentence_offsets_and_types():
    sentence = parse_sentence(SENTENCES_1001[1])
    assert sentence.text == "The men wear red hats and something ."
    assert [(e, t, w, sentence.text[s:x]) for e, t, w, s, x in sentence.phrases] == [
        (1, ["people"], "The men", "The men"),
        (4, ["clothing", "other"], "red hats", "red hats"),
        (9, ["notvisual"], "something", "something"),
    ]
    assert parse_sentence("[/EN#3/people ] waves .").phrases == [(3, ["people"], "", 0, 0)]
    for bad in ("[/EN#5/people A woman] holds [/EN#6/other a cup .", "a ] b", "[/EN#1/x y] [z"):
        with pytest.raises(ValueError, match="unbalanced"):
            parse_sentence(bad)


def test_parse_annotation_converts_one_based_inclusive_boxes():
    xml = (
        b"<annotation><size><width>40</width><height>30</height></size>"
        b"<object><name>4</name><name>8</name><bndbox><xmin>6</xmin><ymin>1</ymin><xmax>15</xmax><ymax>6</ymax>"
        b"</bndbox></object><object><name>2</name><nobndbox>1</nobndbox></object></annotation>"
    )
    boxes = parse_annotation(xml)
    assert (boxes.width, boxes.height) == (40, 30)
    assert boxes.boxes == {4: [[5.0, 0.0, 15.0, 6.0]], 8: [[5.0, 0.0, 15.0, 6.0]]}
    assert union_box([[2, 4, 10, 20], [11, 3, 20, 22]]) == [2, 3, 20, 22]


def test_parse_annotation_refuses_a_dtd_unparsed():
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><annotation>&x;</annotation>'
    with pytest.raises(ValueError, match="refused unparsed"):
        parse_annotation(bomb)
    with pytest.raises(ValueError, match="well-formed"):
        parse_annotation(b"<annotation><size>")


def test_flickr30k_records_per_sentence(tmp_path):
    records = by_id(read_flickr30k(**write_flickr30k(tmp_path)))
    assert list(records) == ["flickr_1001_0", "flickr_1001_1", "flickr_1002_0", "flickr_1003_0"]
    first = records["flickr_1001_0"]
    assert (first.split, first.file_name, first.width, first.height) == ("train", "1001.jpg", 48, 36)
    assert first.captions == ["Two men sit on a bench in the park ."]
    (men,) = first.entities
    assert (men.key, men.label, men.object_id) == ("Two men", "people", 1)
    assert men.bbox == [2.0, 3.0, 20.0, 22.0]  # two boxes merged, 1-based inclusive -> 0-based exclusive
    assert sorted((d["phrase"], d["reason"]) for d in first.dropped) == [
        ("a bench", "box_outside_image"),  # xmax 50 > 48 + 1
        ("the park", "no_box"),
    ]
    second = records["flickr_1001_1"]
    assert [(e.key, e.label, e.bbox) for e in second.entities] == [
        ("The men", "people", [2.0, 3.0, 20.0, 22.0]),
        ("red hats", "clothing/other", [5.0, 0.0, 15.0, 6.0]),
    ]
    assert second.dropped == [{"phrase": "something", "reason": "not_visual"}]
    assert records["flickr_1002_0"].split == "val" and records["flickr_1002_0"].error_type == "MalformedSentence"
    assert records["flickr_1003_0"].error_type == "MissingAnnotation"
    kept = [r.record_id for r in read_flickr30k(**write_flickr30k(tmp_path / "again"), splits=("val",))]
    assert kept == ["flickr_1002_0"]


def test_flickr30k_without_sentences_folder_says_so(tmp_path):
    write_jpeg(tmp_path / "images/1.jpg")
    with pytest.raises(FileNotFoundError, match="Sentences"):
        list(read_flickr30k(tmp_path, tmp_path / "images"))
