"""The GranD-f source exports, parsed the way GLaMM's GCG loaders parse them (``glamm_loaders.py``).

The output comes from the whole construction on the hand-built fixtures (``tests/sources/chain.py``); every answer
below was worked out from the fixtures (``tests/sources/fixtures.py``) and the scripted captions of ``chain.py``.
With ``GLAMM_REPO`` pointing at a GLaMM checkout, every file is also parsed by GLaMM's own code
(``glamm_real.py``) and must give the same result as the statement.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.cli import main
from grand_engine.grandf.exports import export
from grand_engine.io import rle
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.grandf import GrandF
from grand_engine.stages.source_gcg import SOURCE_GCG_SCHEMA
from tests.grandf import glamm_loaders as spec
from tests.grandf import glamm_real
from tests.grandf.level4 import CAPTION, H, W, images_table, level4_table, scene_row, write_output
from tests.sources.chain import build_output
from tests.sources.fixtures import write_jpeg

TRAIN = "GranDf/annotations/train"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    out = build_output(root)
    dest = root / TRAIN
    reports = {fmt: export(out, fmt, dest) for fmt in ("openpsg-gcg", "refcocog-gcg", "flickr-gcg")}
    return root, dest, reports


REPO = glamm_real.glamm_repo()
GLAMM = glamm_real.load_module(REPO) if REPO is not None else None
PARSERS = ["statement"] + (["glamm"] if GLAMM is not None else [])


def areas(parsed: spec.Parsed) -> list[int]:
    return [int(m.sum()) for m in parsed.masks]


@pytest.mark.parametrize("parser", PARSERS)
def test_openpsg_files_parse_to_the_relation_captions(built, parser):
    root, dest, reports = built
    images = root / "datasets/openpsg/train2017"
    parsed = {}
    for split in ("train", "val"):
        (element,) = spec.load_list(dest / f"OpenPsgGCG_{split}.json")
        if parser == "statement":
            parsed[split] = spec.parse_gcg_base(element, images)
            answer = parsed[split].answer()
        else:
            parsed[split], answer = glamm_real.parse_gcg_base(GLAMM, element, images)
        parsed[split].answer_text = answer
    train, val = parsed["train"], parsed["val"]
    assert train.file_name == "000000000001.jpg"
    assert train.caption == "Person 1 stands beside person 2. Person 2 is standing on the dining table."
    assert train.labels == ["Person 1", "person 2", "dining table"]
    assert train.tokens_positive == [[0, 8], [23, 31], [61, 73]]
    assert areas(train) == [200, 200, 160]
    assert train.answer_text == (
        "<p> Person 1 </p> [SEG] stands beside <p> person 2 </p> [SEG]. Person 2 is standing on the "
        "<p> dining table </p> [SEG]."
    )
    assert (val.labels, val.tokens_positive, areas(val)) == (["cat", "blanket"], [[2, 5], [20, 27]], [600, 600])
    report = reports["openpsg-gcg"]
    assert report.records == 2 and report.invalid == 0
    assert report.skipped["other_source"] == 5 and report.skipped["phrase_duplicate_relation"] == 1


@pytest.mark.parametrize("parser", PARSERS)
def test_refcocog_files_parse_to_the_referring_phrases(built, parser):
    root, dest, reports = built
    images = root / "datasets/refcocog/train2014"
    (element,) = spec.load_list(dest / "RefCOCOg_GCG_train.json")
    assert list(element) == ["refcocog_11_train"]
    refs = element["refcocog_11_train"]["refs"]
    assert [r["sentence"] for r in refs] == ["the man on the left", "a woman in red."]  # caption order
    assert refs[0]["segmentation"] == [[5.0, 5.0, 15.0, 5.0, 15.0, 25.0, 5.0, 25.0]]  # the polygon as COCO wrote it
    assert isinstance(refs[1]["segmentation"][0]["counts"], list)  # the crowd mask as an uncompressed RLE
    parse = spec.parse_refcocog if parser == "statement" else lambda e, d: glamm_real.parse_refcocog(GLAMM, e, d)
    train = parse(element, images)
    assert train.caption == "the man on the left waits. a woman in red. stands still."
    assert train.labels == ["the man on the left", "a woman in red."]
    assert train.tokens_positive == [[0, 19], [27, 42]]
    assert areas(train) == [200, 200]
    (val_element,) = spec.load_list(dest / "RefCOCOg_GCG_val.json")
    val = parse(val_element, images)
    assert (val.labels, val.tokens_positive, areas(val)) == (["the cup"], [[0, 7]], [100])
    report = reports["refcocog-gcg"]
    assert report.records == 2 and report.skipped["split_test"] == 1 and report.invalid == 0


def test_refcocog_refs_out_of_caption_order_would_be_corrupted_by_the_loader(built):
    """Why the export writes refs in caption order: the loader's overlap trimming walks them in file order."""
    root, dest, _ = built
    (element,) = spec.load_list(dest / "RefCOCOg_GCG_train.json")
    info = element["refcocog_11_train"]
    reversed_element = {"x": dict(info, refs=list(reversed(info["refs"])))}
    parsed = spec.parse_refcocog(reversed_element, root / "datasets/refcocog/train2014")
    assert parsed.tokens_positive == [[0, 19], [27, -1]] and parsed.labels[0] == ""


@pytest.mark.parametrize("parser", PARSERS)
def test_flickr_files_parse_to_the_phrase_captions(built, parser):
    root, dest, reports = built
    images = root / "datasets/flickr30k/images"
    path = dest / "flickr_mergedGT_GCG_train.json"
    parsed = spec.parse_flickr(path) if parser == "statement" else glamm_real.parse_flickr(GLAMM, path, images)
    assert [(p.file_name, p.caption) for p in parsed] == [
        ("1001.jpg", "Two men are there."),
        ("1001.jpg", "The men wear red hats."),
    ]
    assert [(p.labels, p.tokens_positive, areas(p)) for p in parsed] == [
        (["Two men"], [[0, 7]], [18 * 19]),
        (["The men", "red hats"], [[0, 7], [13, 21]], [18 * 19, 10 * 6]),
    ]
    doc = json.loads(path.read_text())
    assert [a["id"] for a in doc["annotations"]] == [1, 2, 3] and doc["categories"] == [
        {"id": 1, "name": "object", "supercategory": ""}
    ]
    assert doc["annotations"][2]["bbox"] == [5.0, 0.0, 10.0, 6.0] and doc["annotations"][2]["area"] == 60.0
    val = json.loads((dest / "flickr_mergedGT_GCG_val.json").read_text())
    assert val["images"] == [] and val["annotations"] == []  # 1002's only sentence was malformed
    assert reports["flickr-gcg"].records == 2 and reports["flickr-gcg"].invalid == 0


def test_flickr_export_leaves_out_what_the_loader_would_filter(tmp_path):
    def record(image_id: str, caption: str, box: list[float], size: tuple[int, int] = (48, 36)) -> dict:
        width, height = size
        mask = np.zeros((height, width), bool)
        mask[0:5, 0:5] = True
        grounding = {
            "phrase": "Two men",
            "key": "Two men",
            "token_positives": [0, 7],
            "rle_masks": [rle.encode(mask)],
            "polygons": None,
            "bbox": box,
            "object_id": 1,
            "mask_source": "sam",
        }
        return {
            "image_id": image_id,
            "file_name": f"{image_id}.jpg",
            "width": width,
            "height": height,
            "dataset": "flickr30k",
            "split": "train",
            "source_key": image_id,
            "caption": caption,
            "groundings": [grounding],
            "dropped": [],
        }

    rows = [
        record("a", "Two men.", [0, 0, 5, 5]),  # two words
        record("b", "Two men sit here.", [0, 0, 0.5, 5]),  # a box under one pixel wide
        record("c", "Two men sit here.", [0, 0, 5, 5], size=(40, 30)),  # a side under 32 pixels
    ]
    table = pa.Table.from_pylist(rows, schema=SOURCE_GCG_SCHEMA)
    write_output(tmp_path / "out", {"u/00000": {"source_gcg": table}})
    report = export(tmp_path / "out", "flickr-gcg", tmp_path / "dest")
    assert report.records == 0 and report.invalid == 0
    assert dict(report.skipped) == {
        "caption_under_3_words": 1,
        "phrase_box_under_1_px": 1,
        "image_without_usable_box": 1,
        "image_under_32_px": 1,
    }


def test_the_grand_derived_grandf_layout_parses_with_the_base_loader(tmp_path):
    """The existing ``grandf`` export (GranD-derived records, GranDf_HA_GCG_train.json layout) through the base
    loader statement: the scene's verified caption with its two masked phrases."""
    images = images_table([{"image_id": "sa_1", "width": W, "height": H}])
    level4 = level4_table([scene_row("sa_1")])
    grandf = GrandF.configure().process(UnitInput("u", images, {"level4": level4, "images": images})).table
    write_output(tmp_path / "out", {"sa_000000/00000": {"images": images, "level4": level4, "grandf": grandf}})
    dest = tmp_path / "GranDf_HA_GCG_train.json"
    export(tmp_path / "out", "grandf", dest)
    write_jpeg(tmp_path / "img" / "sa_1.jpg", size=(W, H))
    (element,) = spec.load_list(dest)
    parsed = spec.parse_gcg_base(element, tmp_path / "img")
    assert parsed.caption == CAPTION
    assert parsed.labels == ["A brown dog", "café ball"] and parsed.tokens_positive == [[0, 11], [21, 30]]
    assert areas(parsed) == [100, 25]
    assert parsed.answer().startswith("<p> A brown dog </p> [SEG] chases a <p> café ball </p> [SEG]")


def test_export_command_writes_the_pair_of_files(built, tmp_path, capsys):
    root, _, _ = built
    dest = tmp_path / "annotations"
    dest.mkdir()
    (dest / "GranDf_HA_GCG_train.json").write_text("[]")  # another file of the folder stays
    assert main(["export", str(root / "out"), str(dest), "--format", "refcocog-gcg", "--no-progress"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == [
        "GranDf_HA_GCG_train.json",
        "RefCOCOg_GCG_train.json",
        "RefCOCOg_GCG_val.json",
    ]
    assert "refcocog-gcg: 2 records" in capsys.readouterr().out
