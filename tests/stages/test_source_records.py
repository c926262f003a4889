"""``source_records``: the root stage of the GranD-f source inputs, on record shards of the hand-built fixtures."""

from __future__ import annotations

import json

from grand_engine.io.sa1b import Locator, Member
from grand_engine.runtime.stage import UnitInput
from grand_engine.sources.flickr30k import read_flickr30k
from grand_engine.sources.openpsg import read_openpsg
from grand_engine.sources.records import Entity, SourceRecord
from grand_engine.sources.shards import index_record_shard, write_record_shards
from grand_engine.stages.source_records import SOURCE_RECORDS_SCHEMA, SourceRecords
from tests.sources.fixtures import H, W, write_flickr30k, write_jpeg, write_openpsg


def run_root(members):
    """The root stage on ``members`` (a root stage creates its images, so the runner's per-image checks do not
    apply; its table must still have exactly the declared schema)."""
    stage = SourceRecords.configure()
    stage.setup()
    result = stage.process(UnitInput("s/00000", SOURCE_RECORDS_SCHEMA.empty_table(), members=members))
    assert result.table.schema.equals(SOURCE_RECORDS_SCHEMA)
    return result


def test_openpsg_shard_rows_and_error_rows(tmp_path):
    shard = write_record_shards(read_openpsg(**write_openpsg(tmp_path / "psg")), tmp_path / "shards", "openpsg")[0]
    result = run_root(index_record_shard(shard, source="openpsg").members)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert sorted(rows) == ["psg_1", "psg_2"]
    one = rows["psg_1"]
    assert (one["width"], one["height"], one["format"], one["file_name"]) == (W, H, "JPEG", "000000000001.jpg")
    assert one["source"] == str(tmp_path / "psg/train2017/000000000001.jpg")  # the images column: the file read
    assert (one["kind"], one["split"], one["source_key"]) == ("relation", "train", "1")
    assert [e["key"] for e in one["entities"]] == ["person-1", "person-2", "dining table-1"]
    assert one["relations"][1] == {"subject": "person-2", "predicate": "standing on", "object": "dining table-1"}
    assert one["dropped"] == [{"phrase": "person-1 beside person-2", "reason": "duplicate_relation"}]
    assert rows["psg_2"]["split"] == "val"
    assert [(e.image_id, e.error_type) for e in result.errors] == [("psg_3", "NoRelation")]


def test_flickr_shard_keeps_boxes_and_reports_bad_records(tmp_path):
    paths = write_flickr30k(tmp_path / "f")
    shard = write_record_shards(read_flickr30k(**paths), tmp_path / "shards", "flickr30k")[0]
    result = run_root(index_record_shard(shard).members)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert sorted(rows) == ["flickr_1001_0", "flickr_1001_1"]
    assert rows["flickr_1001_0"]["entities"][0]["bbox"] == [2.0, 3.0, 20.0, 22.0]
    assert rows["flickr_1001_0"]["entities"][0]["segmentation"] is None
    errors = {e.image_id: e for e in result.errors}
    assert {k: e.error_type for k, e in errors.items()} == {
        "flickr_1002_0": "MalformedSentence",
        "flickr_1003_0": "MissingAnnotation",
    }
    assert errors["flickr_1002_0"].message.startswith("flickr_1002_0: sentence 0: unbalanced")


def test_size_mismatch_missing_image_and_a_changed_shard(tmp_path):
    image = write_jpeg(tmp_path / "a.jpg")
    small = write_jpeg(tmp_path / "b.jpg", size=(20, 10))

    def record(rid: str, path, width: int = W, height: int = H, box=(0, 0, 30, 20)) -> SourceRecord:
        return SourceRecord(
            rid,
            "flickr30k",
            "phrase",
            "train",
            "x.jpg",
            str(path),
            width,
            height,
            entities=[Entity("a man", bbox=list(box))],
        )

    records = [
        record("ok", image),
        record("wrong_size", image, width=41),
        record("gone", tmp_path / "gone.jpg"),
        record("shrunk", small, width=None, height=None),  # no stated size: the box is checked against 20x10
    ]
    shard = write_record_shards(records, tmp_path / "shards", "flickr30k")[0]
    members = index_record_shard(shard).members
    moved = Member("renamed", "x.jpg", members[0].image, members[0].annotation)  # the line holds record "ok"
    bad_json = Member("bad", "x.jpg", members[0].image, Locator(str(shard), 0, 5))
    result = run_root([*members, moved, bad_json])
    assert result.table.column("image_id").to_pylist() == ["ok"]
    errors = {e.image_id: (e.error_type, e.message) for e in result.errors}
    assert errors["wrong_size"][0] == "ImageSizeMismatch" and "41x30" in errors["wrong_size"][1]
    assert errors["gone"][0] == "MissingImage"
    assert errors["shrunk"][0] == "NoGroundablePhrase" and "box_outside_image" in errors["shrunk"][1]
    assert errors["renamed"][0] == "MalformedRecord" and "changed since it was indexed" in errors["renamed"][1]
    assert errors["bad"][0] == "MalformedRecord"
    assert json.loads(shard.read_text().splitlines()[0])["record_id"] == "ok"
