"""Every export format on hand-built level-4 output with answers worked out by hand.

The output (``run_out``) has two units: ``sa_1`` (the scene of ``level4.py``, verified), ``sa_2`` (no dense
caption, no objects) and ``sa_3`` (the scene again, verification failed). In the scene, objects 0 (dog, box
0,0,10,10) and 1 (ball, box 20,20,25,25) have masks; floating objects 2 (tree) and 4 (bird) have none, 3 (cat,
box 30,0,40,10) has one.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

from grand_engine.cli.export import add_parser as add_export_parser
from grand_engine.cli.export import run as cmd_export
from grand_engine.grandf import records as R
from grand_engine.grandf.exports import export
from grand_engine.grandf.reader import MissingStageError
from grand_engine.io import rle
from grand_engine.stages.grandf import GRANDF_SCHEMA, GrandF
from grand_engine.testing import make_unit
from tests.grandf.level4 import (
    CAPTION,
    H,
    W,
    box_mask,
    detail,
    images_table,
    level4_row,
    level4_table,
    obj,
    scene_row,
    write_output,
)

DOG = box_mask(H, W, (0, 0, 10, 10))
BALL = box_mask(H, W, (20, 20, 25, 25))
CAT = box_mask(H, W, (30, 0, 40, 10))


def _tables(rows):
    images = images_table([{"image_id": r["image_id"], "width": r["width"], "height": r["height"]} for r in rows])
    level4 = level4_table(rows)
    grandf = GrandF.configure().process(make_unit(images.to_pylist(), inputs={"level4": level4})).table
    return {"images": images, "level4": level4, "grandf": grandf}


@pytest.fixture
def run_out(tmp_path):
    units = {
        "sa_000000/00000": _tables([scene_row("sa_1"), level4_row("sa_2", W, H)]),
        "sa_000000/00001": _tables([scene_row("sa_3", status="failed")]),
    }
    write_output(tmp_path / "out", units)
    return tmp_path / "out"


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_grandf_export_and_round_trip(run_out, tmp_path):
    dest = tmp_path / "GranDf_GCG.json"
    report = export(run_out, "grandf", dest)
    data = json.loads(dest.read_text(encoding="utf-8"))
    assert data == [
        {
            "file_name": "sa_1.jpg",
            "caption": CAPTION,
            "groundings": {
                "A brown dog": {"token_positives": [0, 11], "rle_masks": [DOG]},
                "café ball": {"token_positives": [21, 30], "rle_masks": [BALL]},
            },
        }
    ]
    assert list(data[0]["groundings"]) == ["A brown dog", "café ball"]  # ordered by start offset
    assert "café" in dest.read_text(encoding="utf-8")  # UTF-8 as is, not \\u escapes
    assert report.records == 1 and report.images_read == 3 and report.units == 2 and report.invalid == 0
    assert report.skipped == {"image_no_dense_caption": 1, "image_verification_failed": 1, "phrase_no_mask": 1}
    assert report.items == {"phrases": 2, "masks": 2}

    # Round trip: the re-read spans and masks equal the grandf table's, and select the phrases.
    import pyarrow.parquet as pq

    table = pq.read_table(run_out / "grandf" / "sa_000000" / "00000.parquet").to_pylist()
    expected = {g["phrase"]: g for g in table[0]["groundings"]}
    for phrase, g in data[0]["groundings"].items():
        start, end = g["token_positives"]
        assert data[0]["caption"][start:end] == phrase
        assert [start, end] == expected[phrase]["token_positives"]
        assert g["rle_masks"] == expected[phrase]["rle_masks"]
        assert np.array_equal(rle.decode(g["rle_masks"][0]), rle.decode(expected[phrase]["rle_masks"][0]))


def test_grandf_short_export(run_out, tmp_path):
    report = export(run_out, "grandf-short", tmp_path / "short.json")
    data = json.loads((tmp_path / "short.json").read_text())
    expected = {
        "file_name": "sa_1.jpg",
        "caption": "a dog and a cat",
        "groundings": {
            "a dog": {"token_positives": [0, 5], "rle_masks": [DOG]},
            "a cat": {"token_positives": [10, 15], "rle_masks": [CAT]},  # a floating object's mask
        },
    }
    assert data == [expected, {**expected, "file_name": "sa_3.jpg"}]  # verification does not gate short captions
    assert report.skipped == {"caption_without_grounding": 2, "image_without_short_captions": 1, "phrase_no_mask": 4}


def test_grand_export_jsonl_and_files(run_out, tmp_path):
    report = export(run_out, "grand", tmp_path / "grand.jsonl")
    lines = _lines(tmp_path / "grand.jsonl")
    assert [next(iter(x)) for x in lines] == ["sa_1.jpg", "sa_2.jpg", "sa_3.jpg"]
    rec = lines[0]["sa_1.jpg"]
    assert rec["objects"][0] == {
        "id": 0,
        "bbox": [0.0, 0.0, 10.0, 10.0],
        "labels": ["dog"],
        "label": "dog",
        "score": 0.9,
        "attributes": ["Assistant: a brown dog running", "a dog"],
        "depth": 1.0,
        "segmentation": DOG,
        "segmentation_source": "SAM",
    }
    assert rec["objects"][1]["segmentation_source"] == "HQ_SAM"
    cat = rec["floating_objects"][1]
    assert cat["segmentation"] == CAT and cat["segmentation_source"] == "EVA"
    assert "score" not in cat and "label" not in cat  # caption-made entries have no score; floating: no label
    assert "segmentation" not in rec["floating_objects"][0]  # the tree has no mask
    assert rec["id_counter"] == 5
    assert rec["relationships"] == {
        "object_ids": [0],
        "floating_object_ids": [3],
        "grounding": [{"phrase": "a dog", "object_ids": [0]}, {"phrase": "a cat", "object_ids": [3]}],
    }
    assert rec["short_captions"][0]["details"][1] == {
        "phrase": "a cat",
        "tokens_positive": [10, 15],
        "id": 3,
        "bbox": [30.0, 0.0, 40.0, 10.0],
    }
    assert rec["dense_caption"]["details"][0] == {
        "phrase": "old tree.",
        "tokens_positive": [40, 49],
        "ids": [2],
        "bbox": [[5.0, 5.0, 35.0, 28.0]],
    }
    assert rec["landmark"] == {"category": "outdoor", "fine_category": "park"}
    assert rec["affordances"] == {
        "play": {"description": "things to play with", "object_ids": [1], "labels": ["ball"]}
    }
    assert rec["additional_context"].startswith("The dog seems")
    assert rec["floating_attributes"] == [
        {"bbox": [0.0, 0.0, 5.0, 5.0], "labels": [], "score": 0.5, "attributes": ["grass"]}
    ]
    assert report.records == 3 and report.invalid == 0

    folder = tmp_path / "grand_files"
    report = export(run_out, "grand", folder, layout="files")
    assert sorted(p.name for p in folder.glob("*.json")) == ["sa_1.json", "sa_2.json", "sa_3.json"]
    assert json.loads((folder / "sa_1.json").read_text()) == lines[0]
    export(run_out, "grand", folder, layout="files")  # an earlier export folder is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        export(run_out, "grand", tmp_path / "other", layout="files")
    assert (tmp_path / "other" / "keep.txt").exists()


def test_coco_export_loads_in_pycocotools(run_out, tmp_path):
    from pycocotools.coco import COCO

    dest = tmp_path / "coco.json"
    report = export(run_out, "coco", dest)
    doc = json.loads(dest.read_text())
    assert doc["categories"] == [
        {"id": 1, "name": "dog", "supercategory": ""},
        {"id": 2, "name": "ball", "supercategory": ""},
    ]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in doc["images"]] == [
        (1, "sa_1.jpg", W, H),
        (2, "sa_2.jpg", W, H),
        (3, "sa_3.jpg", W, H),
    ]
    assert [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in doc["annotations"]] == [
        (1, 1, 1, [0.0, 0.0, 10.0, 10.0], 100),
        (2, 1, 2, [20.0, 20.0, 5.0, 5.0], 25),
        (3, 3, 1, [0.0, 0.0, 10.0, 10.0], 100),
        (4, 3, 2, [20.0, 20.0, 5.0, 5.0], 25),
    ]
    assert [a["grand_bbox"] for a in doc["annotations"]] == [a["bbox"] for a in doc["annotations"]]  # masks fill boxes
    coco = COCO(str(dest))
    assert coco.getAnnIds(imgIds=[1]) == [1, 2]
    assert np.array_equal(coco.annToMask(coco.anns[2]).astype(bool), rle.decode(BALL))
    assert report.records == 3 and report.items == {"annotations": 4, "categories": 2}

    report = export(run_out, "coco", dest, include_floating=True)
    doc = json.loads(dest.read_text())
    assert [c["name"] for c in doc["categories"]] == ["dog", "ball", "cat"]
    assert report.items["annotations"] == 6
    assert report.skipped == {"object_without_mask": 4}  # tree and bird, in two images


def test_coco_bbox_is_the_masks_tight_box(tmp_path):
    """A mask that reaches outside its object's box: COCO's bbox is the mask's, the object's box is grand_bbox."""
    from pycocotools import mask as mask_api

    row = scene_row("sa_5")
    row["objects"][1]["segmentation"] = box_mask(H, W, (18, 19, 26, 25))  # the ball's box is (20, 20, 25, 25)
    write_output(tmp_path / "out", {"sa_000003/00000": _tables([row])})
    report = export(tmp_path / "out", "coco", tmp_path / "coco.json")
    dog, ball = json.loads((tmp_path / "coco.json").read_text())["annotations"]
    assert (ball["bbox"], ball["grand_bbox"], ball["area"]) == ([18.0, 19.0, 8.0, 6.0], [20.0, 20.0, 5.0, 5.0], 48)
    assert dog["bbox"] == dog["grand_bbox"] == [0.0, 0.0, 10.0, 10.0]
    seg = {"size": ball["segmentation"]["size"], "counts": ball["segmentation"]["counts"].encode()}
    assert mask_api.toBbox(seg).tolist() == ball["bbox"]  # what pycocotools computes from the mask
    assert report.invalid == 0


def test_refseg_export_skips_objects_without_masks(run_out, tmp_path):
    report = export(run_out, "refseg", tmp_path / "refseg.jsonl")
    lines = _lines(tmp_path / "refseg.jsonl")
    assert [next(iter(x)) for x in lines] == ["sa_1.jpg", "sa_3.jpg"]
    assert lines[0]["sa_1.jpg"] == [
        {"attribute": "a brown dog running", "id": 0, "bbox": [0.0, 0.0, 10.0, 10.0], "segmentation": DOG},
        {"attribute": "a dog", "id": 0, "bbox": [0.0, 0.0, 10.0, 10.0], "segmentation": DOG},
        {"attribute": "a red ball", "id": 1, "bbox": [20.0, 20.0, 25.0, 25.0], "segmentation": BALL},
    ]
    assert report.skipped == {"image_without_referring_expression": 1}

    report = export(run_out, "refseg", tmp_path / "refseg.jsonl", include_floating=True)
    entries = _lines(tmp_path / "refseg.jsonl")[0]["sa_1.jpg"]
    assert entries[-1] == {
        "attribute": "a sleeping cat",
        "id": 3,
        "bbox": [30.0, 0.0, 40.0, 10.0],
        "segmentation": CAT,
    }
    assert len(entries) == 4 and report.skipped["object_without_mask"] == 2  # the tree, twice; not the image


def test_referring_attribute_rule():
    ball = obj(0, (0, 0, 1, 1), "ball", labels=["ball", "sports_ball"])
    assert R.referring_attributes({**ball, "attributes": ["ASSISTANT a shiny thing"]}) == ["a shiny thing"]
    assert R.referring_attributes({**ball, "attributes": ["a red thing", "shiny round toy"]}) == ["a red thing"]
    assert R.referring_attributes({**ball, "attributes": ["a red thing", "a Sports Ball", "Ball!"]}) == [
        "a Sports Ball",
        "Ball!",
    ]
    assert R.referring_attributes({**ball, "attributes": "Assistant: one string"}) == ["one string"]
    assert R.referring_attributes({**ball, "attributes": ["istant:", "  "]}) == []


def test_caption_grounding_export(run_out, tmp_path):
    report = export(run_out, "caption-grounding", tmp_path / "cg.jsonl")
    lines = _lines(tmp_path / "cg.jsonl")
    assert [next(iter(x)) for x in lines] == ["sa_1.jpg", "sa_3.jpg"]
    assert lines[0]["sa_1.jpg"] == [
        {
            "caption": "a dog and a cat",
            "details": [
                {
                    "phrase": "a dog",
                    "tokens_positive": [0, 5],
                    "id": 0,
                    "ids": [0],
                    "bbox": [0.0, 0.0, 10.0, 10.0],
                    "segmentation": DOG,
                },
                {
                    "phrase": "a cat",
                    "tokens_positive": [10, 15],
                    "id": 3,
                    "ids": [3],
                    "bbox": [30.0, 0.0, 40.0, 10.0],
                    "segmentation": CAT,
                },
            ],
        },
        {"caption": "Ünder a tree, a bird", "details": []},
    ]
    assert report.skipped == {"image_without_short_captions": 1, "phrase_no_mask": 4}
    assert report.items == {"captions": 4, "phrases": 4}


def test_caption_grounding_unions_the_masks_of_a_phrase():
    row = scene_row()
    row["short_captions"] = [{"caption": "a dog and a ball", "details": [detail("a dog and a ball", [0, 16], [0, 1])]}]
    captions, dropped = R.caption_grounding(row)
    seg = captions[0]["details"][0]["segmentation"]
    assert np.array_equal(rle.decode(seg), rle.decode(DOG) | rle.decode(BALL))
    assert captions[0]["details"][0]["ids"] == [0, 1] and not dropped


def test_invalid_records_are_counted_not_written(tmp_path):
    bad = scene_row("sa_9")
    bad["objects"][1]["segmentation"] = box_mask(H + 2, W, (20, 20, 25, 25))  # wrong size
    tables = _tables([bad, scene_row("sa_8")])
    rows = tables["grandf"].to_pylist()
    rows[1]["groundings"][0]["phrase"] = "a brown cat"  # a span that no longer selects its phrase
    tables["grandf"] = type(tables["grandf"]).from_pylist(rows, schema=GRANDF_SCHEMA)
    out = tmp_path / "out"
    write_output(out, {"sa_000001/00000": tables})

    report = export(out, "grand", tmp_path / "g.jsonl")
    assert report.invalid == 1 and report.records == 1
    assert [next(iter(x)) for x in _lines(tmp_path / "g.jsonl")] == ["sa_8.jpg"]
    assert any("sa_9" in e and "size" in e for e in report.examples)
    assert export(out, "coco", tmp_path / "c.json").invalid == 1

    report = export(out, "grandf", tmp_path / "f.json")
    # sa_9's ball mask has the wrong size, so grandf dropped that phrase (no_mask) and kept a valid record;
    # sa_8's edited phrase fails the span check.
    assert report.invalid == 1 and report.records == 1
    assert any("'a brown cat'" in e for e in report.examples)


def test_missing_stage_and_cli(run_out, tmp_path, capsys):
    with pytest.raises(MissingStageError, match="level3"):
        export(run_out, "grand", tmp_path / "x.jsonl", level=3)
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    dest_dir = tmp_path / "exports"
    dest_dir.mkdir()
    args = parser.parse_args(["export", str(run_out), str(dest_dir), "--format", "coco", "--no-progress"])
    assert cmd_export(args) == 0
    assert (dest_dir / "grand_coco.json").exists()
    assert "coco: 3 records from 3 images" in capsys.readouterr().out
    args = parser.parse_args(["export", str(run_out), str(dest_dir), "--format", "grand", "--level", "3"])
    assert cmd_export(args) == 2
    assert "no completed unit of stage 'level3'" in capsys.readouterr().err


def test_export_progress_on_a_non_terminal(run_out, tmp_path, capsys):
    """stderr is not a terminal under pytest: one line at the end (the export is shorter than an interval)."""
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    assert cmd_export(parser.parse_args(["export", str(run_out), str(tmp_path / "g.json"), "--format", "grandf"])) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"export grandf: 3/3 images \(100%\), [\d.]+ images/s, \d\d:\d\d elapsed, records 1", line)

    args = ["export", str(run_out), str(tmp_path / "g.json"), "--format", "grandf", "--no-progress"]
    assert cmd_export(parser.parse_args(args)) == 0
    assert capsys.readouterr().err == ""
    args = ["export", str(run_out), str(tmp_path / "g.json"), "--format", "grandf", "--max-images", "2"]
    assert cmd_export(parser.parse_args(args)) == 0
    assert capsys.readouterr().err.startswith("export grandf: 2/2 images (100%)")  # the total is capped


def test_max_images_and_streaming_reads(run_out, tmp_path, monkeypatch):
    from grand_engine.grandf import exports

    reads = []
    original = exports.read_unit

    def spy(store, stage, unit_id, columns=None):
        reads.append(unit_id)
        return original(store, stage, unit_id, columns)

    monkeypatch.setattr(exports, "read_unit", spy)
    report = export(run_out, "grand", tmp_path / "g.jsonl", max_images=2)
    assert report.records == 2 and reads == ["sa_000000/00000"]  # the second unit was never read


def test_malformed_row_is_reported_not_fatal(tmp_path):
    odd = scene_row("sa_7")
    odd["floating_objects"][0]["id"] = None  # breaks int(id): the builder raises, the export goes on
    write_output(tmp_path / "out", {"sa_000002/00000": _tables([odd, scene_row("sa_6")])})
    for fmt in ("grand", "refseg", "caption-grounding"):
        report = export(tmp_path / "out", fmt, tmp_path / f"{fmt}.jsonl", include_floating=True)
        assert report.records == 1 and report.invalid == 1, fmt
        assert [next(iter(x)) for x in _lines(tmp_path / f"{fmt}.jsonl")] == ["sa_6.jpg"]
