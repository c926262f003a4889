"""Read-time record checks, the record JSON, record shards and their index (``records.py``, ``shards.py``)."""

from __future__ import annotations

import json

import pytest

from grand_engine.io import rle
from grand_engine.io.inputs import get_input_kind
from grand_engine.sources.records import Entity, RecordError, Relation, SourceRecord, check_record
from grand_engine.sources.shards import index_record_shard, list_record_shards, write_record_shards
from tests.sources.fixtures import H, W, write_jpeg


def phrase_record(*entities: Entity, **fields) -> SourceRecord:
    return SourceRecord(
        record_id=fields.pop("record_id", "r1"),
        source="flickr30k",
        kind="phrase",
        split="train",
        file_name="a.jpg",
        image_path=fields.pop("image_path", None),
        width=W,
        height=H,
        entities=list(entities),
        **fields,
    )


def test_phrase_checks_drop_with_reasons():
    mask = rle.encode(__import__("numpy").ones((H, W), bool))
    record = phrase_record(
        Entity("a man", bbox=[0, 0, 10, 10]),
        Entity("  "),  # empty
        Entity("A  MAN", bbox=[0, 0, 5, 5]),  # the same phrase, case and spaces aside
        Entity("man", bbox=[1, 1, 2, 2]),  # word-bounded inside "a man"
        Entity("a car", bbox=[-5, 0, 10, 10]),  # 5 px past the left border
        Entity("a tree", bbox=[39, 0, 41, 10]),  # 1 px past the right border: clipped
        Entity("a dog"),  # no region
        Entity("a wall", segmentation={"size": [H + 1, W], "counts": mask["counts"]}),
        Entity("a road", polygons=[[1, 2, 3]]),  # too few coordinates
        Entity("a woman", bbox=[20, 20, 20, 25]),  # no width
    )
    out = check_record(record)
    assert [e.key for e in out.entities] == ["a man", "a tree"]
    assert out.entities[1].bbox == [39.0, 0.0, 40.0, 10.0]
    assert [(d["phrase"], d["reason"]) for d in out.dropped] == [
        ("  ", "empty_phrase"),
        ("A MAN", "duplicate_phrase"),
        ("a car", "box_outside_image"),
        ("a dog", "no_region"),
        ("a wall", "mask_size_mismatch"),
        ("a road", "bad_polygon"),
        ("a woman", "box_outside_image"),
        ("man", "inside_other_phrase"),
    ]
    again = check_record(out)
    assert again.entities == out.entities and again.dropped == out.dropped  # applying it twice changes nothing


def test_a_record_left_with_nothing_is_an_error_naming_it():
    out = check_record(phrase_record(Entity("a dog"), record_id="flickr_9_0"))
    assert out.error_type == "NoGroundablePhrase"
    assert out.error.startswith("flickr_9_0: ") and "'a dog': no_region" in out.error
    rel = SourceRecord(
        "psg_1",
        "openpsg",
        "relation",
        "train",
        "a.jpg",
        None,
        W,
        H,
        entities=[Entity("person-1", bbox=[0, 0, 5, 5])],
        relations=[Relation("person-1", "on", "x-1")],
    )
    out = check_record(rel)
    assert out.error_type == "NoRelation" and out.dropped == [
        {"phrase": "person-1 on x-1", "reason": "unknown_entity"}
    ]


def test_record_json_round_trip_and_field_errors():
    record = phrase_record(Entity("a man", label="people", object_id=3, bbox=[0, 0, 5, 5]), captions=["A man ."])
    assert SourceRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    data = record.to_json()
    for key, value, message in [
        ("split", "dev", "split must be one of train, val, test"),
        ("entities", [{"key": 3}], r"entities\[0\].key must be a string"),
        ("entities", [{"key": "a", "bbox": [1, 2]}], "4 numbers"),
        ("width", "40", "positive integer"),
        ("relations", [["a", "b"]], "3-item list"),
    ]:
        with pytest.raises(RecordError, match=message):
            SourceRecord.from_json({**data, key: value})
    with pytest.raises(RecordError, match="JSON object"):
        SourceRecord.from_json([1])


def test_shards_round_trip_through_the_index(tmp_path):
    image = write_jpeg(tmp_path / "img" / "a.jpg")
    records = [
        phrase_record(Entity("a man", bbox=[0, 0, 5, 5]), record_id=f"r{i}", image_path=str(image)) for i in range(5)
    ]
    records.append(
        phrase_record(
            Entity("a man", bbox=[0, 0, 5, 5]), record_id="r9", image_path=str(tmp_path / "img" / "gone.jpg")
        )
    )
    records.append(phrase_record(record_id="r10", image_path=str(image)).fail("NoGroundablePhrase", "nothing left"))
    paths = write_record_shards(iter(records), tmp_path / "shards", "flickr30k", records_per_shard=4)
    assert [p.name for p in paths] == ["flickr30k-00000.jsonl", "flickr30k-00001.jsonl"]
    assert not list((tmp_path / "shards").glob(".*"))  # no temporary file left
    second = paths[1]
    with open(second, "ab") as fh:  # a malformed line, a duplicate id, another source's record
        fh.write(b'{"record_id": "broken"\n\n')
        fh.write((json.dumps(records[0].to_json()) + "\n").encode())
        other = dict(records[1].to_json(), record_id="x1", source="openpsg")
        fh.write((json.dumps(other) + "\n").encode())
        fh.write((json.dumps(records[4].to_json()) + "\n").encode())  # r4 again, on line 8
    assert list_record_shards([tmp_path / "shards"]) == [p.resolve() for p in paths]
    first = index_record_shard(paths[0])
    assert [m.image_id for m in first.members] == ["r0", "r1", "r2", "r3"] and all(m.ok for m in first.members)
    line = json.loads(
        open(paths[0], "rb").read()[first.members[1].annotation.offset :][: first.members[1].annotation.size]
    )
    assert line["record_id"] == "r1"
    assert first.members[0].image.source == str(image) and first.members[0].image.size == image.stat().st_size
    index = get_input_kind("flickr30k").index_shard(second)
    assert [(m.image_id, m.error_type) for m in index.members] == [
        ("r4", None),
        ("r9", "MissingImage"),
        ("r10", "NoGroundablePhrase"),
        ("flickr30k-00001@4", "MalformedRecord"),
        ("r0", None),  # r0 appears once in this shard: duplicates are per shard
        ("x1", "WrongSource"),
        ("r4@8", "DuplicateMember"),  # its own id: the first r4 keeps its row
    ]
    assert "gone.jpg" in index.members[1].error and "line 4" in index.members[3].error


def test_listing_record_shards_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_record_shards([tmp_path / "nope.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        list_record_shards([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="names no"):
        list_record_shards([str(tmp_path / "*.jsonl")])
