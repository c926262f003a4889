"""The Ref-SAV export: records built from joined video rows, checked and written as meta_expressions.json and
mask_dict.json; the export of a hand-built video output through the one exporter (``grand-engine export --format
ref-sav``), its tables joined per unit and the size read from the video kind's root table. Known answers from
hand-made rows."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.cli.export import add_parser as add_export_parser
from grand_engine.grandf.exports import export, resolve_dest
from grand_engine.grandf.formats import ExportOptions, ExportReport
from grand_engine.grandf.refsav import RefSav, RefSavVerified, RefSavWriter
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import data_path
from grand_engine.stages.video_expression import VideoExpression
from grand_engine.stages.video_input import VIDEOS_SCHEMA
from grand_engine.stages.video_masklets import VIDEO_MASKLETS_SCHEMA
from grand_engine.stages.video_text import VideoMotionText, VideoObjectText, VideoSceneText
from grand_engine.stages.video_tracks import VIDEO_TRACKS_SCHEMA
from tests.grandf.level4 import write_output, write_stage


def joined_row() -> dict:
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    seg = rle.encode(mask)
    objects = [
        {"object_id": 0, "masklet_id": 5, "source": "manual", "masks": [seg, None]},
        {"object_id": 1, "masklet_id": None, "source": "sam2", "masks": [seg, seg]},
        {"object_id": 2, "masklet_id": 7, "source": "manual", "masks": [seg, seg]},
    ]

    def level(text: str) -> dict:
        return {"objects": [{"object_id": 0, "text": text}]}

    return {
        "image_id": "sav_1",
        "objects": [
            {
                "object_id": 0,
                "category": "cup",
                "expression": "The object is a cup.",
                "verification": {"status": "verified"},
            },
            {
                "object_id": 1,
                "category": "dog",
                "expression": "The object is a dog.",
                "verification": {"status": "failed"},
            },
            {"object_id": 2, "category": None, "expression": None, "verification": None, "error": "no text"},
        ],
        "videos": {"file_name": "sav_1.mp4", "width": 6, "height": 4, "fps": 24.0, "frame_indices": [0, 4]},
        "video_tracks": {"objects": objects},
        "video_object_text": level("A white cup."),
        "video_scene_text": level("On a table."),
        "video_motion_text": level("It stays still."),
    }


def test_records_of_one_video() -> None:
    report = ExportReport(format="ref-sav", dest="-")
    fmt = RefSav(ExportOptions(), report)
    [(video_id, meta, masks)] = list(fmt.records(joined_row(), "sav_1.mp4"))
    assert video_id == "sav_1" and meta["frames"] == ["00000", "00004"]
    assert (meta["video"], meta["width"], meta["height"], meta["fps"]) == ("sav_1.mp4", 6, 4, 24.0)
    assert meta["expressions"]["0"] == {
        "exp": "The object is a cup.",
        "obj_id": [0],
        "anno_id": ["sav_1_0"],
        "category": "cup",
        "object_level": "A white cup.",
        "scene_level": "On a table.",
        "video_level": "It stays still.",
        "verification": "verified",
        "masklet_id": 5,
        "source": "manual",
    }
    assert meta["expressions"]["1"]["anno_id"] == ["sav_1_1"] and meta["expressions"]["1"]["object_level"] is None
    assert list(masks) == ["sav_1_0", "sav_1_1"] and masks["sav_1_0"][1] is None
    assert report.skipped == Counter({"object_without_expression": 1})
    assert fmt.check((video_id, meta, masks), {}) == []


def test_verified_only_and_bad_masks() -> None:
    report = ExportReport(format="ref-sav-verified", dest="-")
    fmt = RefSavVerified(ExportOptions(), report)
    [(_, meta, masks)] = list(fmt.records(joined_row(), "sav_1.mp4"))
    assert list(meta["expressions"]) == ["0"] and report.skipped["object_failed"] == 1
    wrong = {"sav_1_0": [rle.encode(np.ones((5, 6), bool)), None]}
    assert fmt.check(("sav_1", meta, wrong), {}) == ["sav_1_0, frame 00000: mask size [5, 6] is not the video's"]
    short = {"sav_1_0": [None]}
    assert fmt.check(("sav_1", meta, short), {}) == ["sav_1_0: 1 masks for 2 frames"]


def test_writer_output_is_the_layout_sa2va_reads(tmp_path: Path) -> None:
    report = ExportReport(format="ref-sav", dest=str(tmp_path))
    fmt = RefSav(ExportOptions(), report)
    writer = fmt.open(tmp_path / "out")
    for record in fmt.records(joined_row(), "sav_1.mp4"):
        fmt.write(writer, record, {})
    other = joined_row() | {"image_id": "sav_2"}
    for record in fmt.records(other, "sav_2.mp4"):
        fmt.write(writer, record, {})
    assert fmt.close(writer) > 0
    meta = json.loads((tmp_path / "out" / "meta_expressions.json").read_text())
    masks = json.loads((tmp_path / "out" / "mask_dict.json").read_text())
    assert list(meta["videos"]) == ["sav_1", "sav_2"]
    for video in meta["videos"].values():
        for exp in video["expressions"].values():
            for anno_id in exp["anno_id"]:
                assert len(masks[anno_id]) == len(video["frames"])
    assert report.items == Counter({"expressions": 4, "masks": 6})
    aborted = RefSavWriter(tmp_path / "gone")
    aborted.abort()
    assert not any((tmp_path / "gone").glob("*.json"))


# -- a video output exported through the one exporter ---------------------------------------------------------

UNIT = "sav_000000/00000"


def _seg(box: tuple[int, int, int, int]) -> dict:
    mask = np.zeros((4, 6), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return rle.encode(mask)


TRACK_A, TRACK_B, SELECTED = _seg((2, 1, 5, 3)), _seg((0, 0, 2, 2)), _seg((1, 1, 3, 3))


def _objects(masks: dict[int, list]) -> list[dict]:
    return [{"object_id": k, "source": "manual", "masklet_id": 10 + k, "masks": v} for k, v in masks.items()]


def video_tables(with_tracks: bool) -> dict[str, pa.Table]:
    """One unit of a video run: sav_1 (two objects, both described), sav_2 (its expression's object has no
    masklet), and a video_expression row of sav_9, which has no videos row. ``with_tracks``: the run ran SAM 2."""
    videos = [
        {"image_id": v, "file_name": f"{v}.mp4", "width": 6, "height": 4, "fps": 24.0, "frame_indices": [0, 4]}
        for v in ("sav_1", "sav_2")
    ]
    expressions = {
        "sav_1": [
            {"object_id": 0, "category": "cup", "expression": "A cup.", "verification": {"status": "verified"}},
            {"object_id": 1, "category": "dog", "expression": "A dog.", "verification": {"status": "failed"}},
        ],
        "sav_2": [{"object_id": 4, "category": "cat", "expression": "A cat.", "verification": {"status": "verified"}}],
        "sav_9": [{"object_id": 0, "category": "ox", "expression": "An ox.", "verification": {"status": "verified"}}],
    }
    masklets = [
        {"image_id": "sav_1", "objects": _objects({0: [SELECTED, None], 1: [SELECTED, SELECTED]})},
        {"image_id": "sav_2", "objects": []},
    ]
    tables = {
        "videos": pa.Table.from_pylist(videos, schema=VIDEOS_SCHEMA),
        "video_masklets": pa.Table.from_pylist(masklets, schema=VIDEO_MASKLETS_SCHEMA),
        "video_expression": pa.Table.from_pylist(
            [{"image_id": v, "objects": objs} for v, objs in expressions.items()], schema=VideoExpression.schema
        ),
    }
    for stage, text in ((VideoObjectText, "A white cup."), (VideoSceneText, "On a table."), (VideoMotionText, "")):
        rows = [{"image_id": "sav_1", "objects": [{"object_id": 0, "text": text or None}]}]
        tables[stage.name] = pa.Table.from_pylist(rows, schema=stage.schema)
    if with_tracks:
        tracks = [{"image_id": "sav_1", "objects": _objects({0: [TRACK_A, TRACK_B], 1: [TRACK_B, TRACK_A]})}]
        tables["video_tracks"] = pa.Table.from_pylist(tracks, schema=VIDEO_TRACKS_SCHEMA)
    return tables


def video_output(root: Path, with_tracks: bool = True, input_kind: str = "video") -> Path:
    store = write_output(root, {UNIT: video_tables(with_tracks)})
    store.write_text("run.json", json.dumps({"input": input_kind}))
    return root


def read_export(dest: Path) -> tuple[dict, dict]:
    meta = json.loads((dest / "meta_expressions.json").read_text())
    return meta["videos"], json.loads((dest / "mask_dict.json").read_text())


def test_export_joins_the_video_tables_of_each_unit(tmp_path: Path) -> None:
    out = video_output(tmp_path / "out")
    report = export(out, "ref-sav", tmp_path / "ref_sav")
    videos, masks = read_export(tmp_path / "ref_sav")
    assert list(videos) == ["sav_1"]
    sav_1 = videos["sav_1"]
    assert (sav_1["video"], sav_1["width"], sav_1["height"], sav_1["frames"]) == (
        "sav_1.mp4",
        6,
        4,
        ["00000", "00004"],
    )
    assert [(e["exp"], e["anno_id"], e["verification"]) for e in sav_1["expressions"].values()] == [
        ("A cup.", ["sav_1_0"], "verified"),
        ("A dog.", ["sav_1_1"], "failed"),
    ]
    first = sav_1["expressions"]["0"]
    assert (first["object_level"], first["scene_level"], first["video_level"]) == ("A white cup.", "On a table.", None)
    assert first["masklet_id"] == 10 and sav_1["expressions"]["1"]["object_level"] is None
    # the masks of video_tracks (SAM 2's), not those of video_masklets
    assert masks == {"sav_1_0": [TRACK_A, TRACK_B], "sav_1_1": [TRACK_B, TRACK_A]}
    assert report.units == 1 and report.images_read == 3 and report.records == 1
    assert report.skipped == Counter({"object_without_masklet": 1, "video_without_expression": 1})
    assert report.items == Counter({"expressions": 2, "masks": 4})
    # sav_9 has no videos row, so no size: one invalid record, the rest written
    assert report.invalid == 1 and report.examples == [
        "sav_9: cannot build the record: ValueError: 'sav_9' has no size in its row or its root table's row"
    ]


def test_without_sam2_the_masks_come_from_video_masklets(tmp_path: Path) -> None:
    out = video_output(tmp_path / "out", with_tracks=False)
    report = export(out, "ref-sav-verified", tmp_path / "ref_sav_verified")
    videos, masks = read_export(tmp_path / "ref_sav_verified")
    assert [e["exp"] for e in videos["sav_1"]["expressions"].values()] == ["A cup."]
    assert masks == {"sav_1_0": [SELECTED, None]}
    assert report.skipped["object_failed"] == 1 and report.items == Counter({"expressions": 1, "masks": 1})


def test_the_root_table_comes_from_the_runs_input_kind(tmp_path: Path) -> None:
    # recorded as an image run, the export looks for the size in an images table the output does not have
    out = video_output(tmp_path / "images_run", input_kind="images")
    report = export(out, "ref-sav", tmp_path / "a")
    assert report.records == 0 and report.invalid == 3
    assert "'sav_1' has no size" in report.examples[0]
    out = video_output(tmp_path / "plugin_run", input_kind="no-such-kind")
    with pytest.raises(ValueError, match="made from input kind 'no-such-kind', which is not installed"):
        export(out, "ref-sav", tmp_path / "b")


def test_a_joined_table_of_a_unit_that_is_not_done_is_not_read(tmp_path: Path) -> None:
    out = video_output(tmp_path / "out")
    store = OutputStore(out)
    second = "sav_000000/00001"
    tables = video_tables(with_tracks=True)
    for stage in ("videos", "video_tracks", "video_expression"):
        rows = [r | {"image_id": "sav_5"} for r in tables[stage].to_pylist() if r["image_id"] == "sav_1"]
        write_stage(store, stage, second, pa.Table.from_pylist(rows, schema=tables[stage].schema))
    # a crash left this unit's video_object_text file without its record: the export must not read it
    leftover = [{"image_id": "sav_5", "objects": [{"object_id": 0, "text": "A leftover."}]}]
    store.write_table(data_path("video_object_text", second), pa.Table.from_pylist(leftover, VideoObjectText.schema))
    report = export(out, "ref-sav", tmp_path / "ref_sav")
    videos, masks = read_export(tmp_path / "ref_sav")
    assert list(videos) == ["sav_1", "sav_5"] and report.units == 2 and report.records == 2
    assert videos["sav_1"]["expressions"]["0"]["object_level"] == "A white cup."
    assert videos["sav_5"]["expressions"]["0"]["object_level"] is None
    assert masks["sav_5_1"] == [TRACK_B, TRACK_A]


def test_grand_engine_export_format_ref_sav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = video_output(tmp_path / "out", with_tracks=False)
    parser = argparse.ArgumentParser(prog="grand-engine")
    add_export_parser(parser.add_subparsers(dest="command"))
    dest = tmp_path / "ref_sav"
    dest.mkdir()  # an existing folder is the destination itself (the export is a folder)
    assert resolve_dest("ref-sav", dest) == dest
    args = parser.parse_args(["export", str(out), str(dest), "--format", "ref-sav", "--no-progress"])
    assert args.func(args) == 1  # sav_9's record is invalid
    videos, masks = read_export(tmp_path / "ref_sav")
    assert list(videos) == ["sav_1"] and masks["sav_1_1"] == [SELECTED, SELECTED]
    assert "ref-sav: 1 records from 3 images (1 units)" in capsys.readouterr().out
