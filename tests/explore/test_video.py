"""The video explorer on a hand-built video output: a real 12-frame clip of a white square moving right, its
masklet, the three descriptions and the expression; ``grand-engine show --html`` picks it for a video run.
Known answers: the frames shown (spread over the sampled ones), the texts, the overlay colour on the square."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from grand_engine.cli.show import add_parser as add_show_parser
from grand_engine.explore.site import object_color
from grand_engine.explore.video import build_video_site, is_video_run
from grand_engine.grandf.reader import MissingStageError
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.stages.video_expression import VideoExpression
from grand_engine.stages.video_input import VIDEOS_SCHEMA
from grand_engine.stages.video_text import VideoMotionText, VideoObjectText, VideoSceneText
from grand_engine.stages.video_tracks import VIDEO_TRACKS_SCHEMA
from tests.grandf.level4 import write_output
from tests.io.video_shards import square_frames, square_masks, video_row, write_video

W, H, N = 64, 48, 12
INDICES = [0, 4, 8]  # the sampled frames (every 4th)
UNIT = "sav_000000/00000"


def video_output(root: Path, input_kind: str = "video") -> Path:
    """``v1``: the square clip, fully described; ``v2``: a masklet row whose video file does not exist."""
    root.mkdir(parents=True, exist_ok=True)
    write_video(root / "v1.mp4", square_frames(N, W, H))
    masks = square_masks(N, W, H)
    square = {
        "object_id": 0,
        "masklet_id": 3,
        "source": "manual",
        "masks": [rle.encode(masks[i]) for i in INDICES],
        "visible_fraction": 1.0,
        "duration": 0.5,
        "propagated": 1,
    }
    videos = [
        video_row("v1", root / "v1.mp4", width=W, height=H, num_frames=N, indices=INDICES),
        video_row("v2", root / "missing.mp4", width=W, height=H, num_frames=N, indices=INDICES),
    ]
    check = {"status": "verified", "checklist": [{"item": "a white square", "verdict": "confirmed", "evidence": "x"}]}
    expression = {"object_id": 0, "expression": "The object is a <b>white</b> square.", "verification": check}
    tables = {
        "videos": pa.Table.from_pylist(videos, schema=VIDEOS_SCHEMA),
        "video_tracks": pa.Table.from_pylist(
            [{"image_id": "v1", "objects": [square]}, {"image_id": "v2", "objects": []}], schema=VIDEO_TRACKS_SCHEMA
        ),
        "video_object_text": pa.Table.from_pylist(
            [
                {
                    "image_id": "v1",
                    "objects": [{"object_id": 0, "category": "square", "text": "A white square.", "frames": [4]}],
                }
            ],
            schema=VideoObjectText.schema,
        ),
        "video_scene_text": pa.Table.from_pylist(
            [{"image_id": "v1", "objects": [{"object_id": 0, "text": "On black."}]}], schema=VideoSceneText.schema
        ),
        "video_motion_text": pa.Table.from_pylist(
            [{"image_id": "v1", "objects": [{"object_id": 0, "error": "no answer"}]}], schema=VideoMotionText.schema
        ),
        "video_expression": pa.Table.from_pylist(
            [{"image_id": "v1", "objects": [expression]}], schema=VideoExpression.schema
        ),
    }
    store = write_output(root / "out", {UNIT: tables})
    store.write_text("run.json", json.dumps({"input": input_kind}))
    return root / "out"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return video_output(tmp_path)


def test_pages_show_the_frames_the_masklet_and_the_three_levels(out: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    report = build_video_site(out, site, frames=2)
    assert report.pages == 2 and len(report.unreadable) == 1 and report.unreadable[0].startswith("v2: ")
    page = (site / "videos" / "v1.html").read_text()
    # two of the three sampled frames, spread: the first and the last
    assert "frame 0 (0.00 s)" in page and "frame 8 (0.33 s)" in page and "frame 4 (" not in page
    assert "manual masklet 3, 1 masks filled by SAM 2" in page and "key frame 4" in page
    for text in ("A white square.", "On black.", "no answer", "The object is a &lt;b&gt;white&lt;/b&gt; square."):
        assert text in page
    assert '<li class="confirmed">a white square' in page
    assert sorted(p.name for p in (site / "media").iterdir()) == ["v1_00000.jpg", "v1_00008.jpg", "v1_obj0.jpg"]
    index = (site / "index.html").read_text()
    assert "<span>1 objects</span><span>1 expressions</span><span>1 verified</span>" in index
    assert "<span>0 objects</span>" in index  # v2: its page is written without pictures


def test_the_key_frame_blends_the_object_colour_into_its_mask(out: Path, tmp_path: Path) -> None:
    build_video_site(out, tmp_path / "site", frames=1)
    key = np.asarray(Image.open(tmp_path / "site" / "media" / "v1_obj0.jpg").convert("RGB"), dtype=float)
    # frame 4: the square spans x 12..27, y 8..23; its inside is white blended 45 % with object 0's colour
    expected = 255 * 0.55 + np.array(object_color(0)) * 0.45
    # (H.264 and JPEG both halve the chroma resolution: a channel may be ~15 off; plain white would be ~95 off)
    assert np.abs(key[16, 20] - expected).max() < 20
    assert key[40, 50].max() < 12  # the black background away from the square is untouched


def test_one_video_or_the_first_ones(out: Path, tmp_path: Path) -> None:
    assert build_video_site(out, tmp_path / "one", video_id="v2").pages == 1
    assert sorted(p.name for p in (tmp_path / "one" / "videos").iterdir()) == ["v2.html"]
    assert build_video_site(out, tmp_path / "first", videos=1).pages == 1
    with pytest.raises(MissingStageError, match="'nope' is not in the video_tracks table"):
        build_video_site(out, tmp_path / "none", video_id="nope")
    assert not (tmp_path / "none").exists()


def test_show_builds_the_video_explorer_for_a_video_run(out: Path, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="grand-engine")
    add_show_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["show", str(out), "--html", str(tmp_path / "site"), "--images", "1"])
    assert is_video_run(out) and args.func(args) == 0
    assert "1 video pages" in capsys.readouterr().out
    assert (tmp_path / "site" / "videos" / "v1.html").is_file()
    assert not is_video_run(video_output(tmp_path / "images_run", input_kind="images"))
    assert not is_video_run(video_output(tmp_path / "plugin_run", input_kind="not-installed"))
    assert not is_video_run(OutputStore(tmp_path / "no_run_json"))
