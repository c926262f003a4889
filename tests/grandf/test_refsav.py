"""The Ref-SAV export: records built from joined video rows, checked and written as meta_expressions.json and
mask_dict.json; known answers from hand-made rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from grand_engine.grandf.formats import ExportOptions, ExportReport
from grand_engine.grandf.refsav import RefSav, RefSavWriter
from grand_engine.io import rle


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
    report = ExportReport(format="ref-sav", dest="-")
    fmt = RefSav(ExportOptions(), report)
    fmt.verified_only = True
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
