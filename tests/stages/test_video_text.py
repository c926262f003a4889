"""The three description stages on the tiny Qwen2.5-VL checkpoint: which frames each level shows, what goes into
its prompt, how an object without a view or an upstream description is reported. The tiny model's text is
random, so the tests check the requests and the table, never the words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.models.base import load_adapter
from grand_engine.stages.video_common import OUTLINE_RGB
from grand_engine.stages.video_text import (
    VideoMotionText,
    VideoObjectText,
    VideoSceneText,
    VisualChat,
    VisualRequest,
    normalise_category,
)
from grand_engine.stages.video_tracks import VIDEO_TRACKS_SCHEMA
from grand_engine.testing import run_stage
from tests.io.video_shards import square_frames, square_masks, video_row, video_unit, write_video
from tests.models.video_checkpoints import video_tiny_dir  # noqa: F401

SHORT = {"max_tokens": 4, "retry_max_tokens": 6, "accept_truncated": True}


class Recording:
    """The real VLM adapter, with every request it gets written down."""

    def __init__(self, vlm: Any) -> None:
        self.vlm = vlm
        self.pictures: list[tuple[np.ndarray, str]] = []
        self.clips: list[tuple[list[np.ndarray], str, float]] = []

    def generate(self, images, prompts, **kw):
        self.pictures += list(zip(images, prompts, strict=True))
        return self.vlm.generate(images, prompts, **kw)

    def generate_video(self, clips, prompts, *, fps, **kw):
        self.clips += list(zip(clips, prompts, fps, strict=True))
        return self.vlm.generate_video(clips, prompts, fps=fps, **kw)


@pytest.fixture(scope="module")
def vlm(video_tiny_dir: Path):  # noqa: F811
    return load_adapter(ModelSpec(id=str(video_tiny_dir / "qwen2.5-vl"), family="video_vlm", dtype="float32"))


@pytest.fixture(scope="module")
def unit_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, pa.Table]:
    path = tmp_path_factory.mktemp("text") / "v.mp4"
    write_video(path, square_frames(16))
    masks = square_masks(16)
    empty = np.zeros_like(masks[0])
    areas = [256, 256, 256, 256]
    seen = [rle.encode(masks[k]) for k in (0, 4, 8, 12)]
    visible = {
        "object_id": 0,
        "masklet_id": 0,
        "source": "manual",
        "masks": seen,
        "areas": areas,
        "visible_fraction": 1.0,
        "mean_area": 256.0,
        "duration": 4 / 6,
        "visibility_changes": 0,
        "propagated": 0,
    }
    hidden = {**visible, "object_id": 1, "masks": [rle.encode(empty)] * 4, "areas": [0] * 4, "mean_area": 0.0}
    tracks = pa.Table.from_pylist(
        [{"image_id": "v", "objects": [visible, hidden], "created": 0, "candidates": 0}], schema=VIDEO_TRACKS_SCHEMA
    )
    return video_row("v", path, width=64, height=48, num_frames=16), tracks


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        ("A dog.", "dog"),
        ("  \nThe red car\nsecond line", "red car"),
        ("an old wooden chair by the door", None),
        ("", None),
        ("Man", "man"),
    ],
)
def test_normalise_category(answer: str, name: str | None) -> None:
    assert normalise_category(answer) == name


def test_visual_chat_routes_pictures_and_clips_in_order(vlm) -> None:
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 256, (40, 60, 3), np.uint8)
    clip = [rng.integers(0, 256, (40, 60, 3), np.uint8) for _ in range(2)]
    chat = VisualChat(vlm)
    out = chat.chat(
        [VisualRequest("a", image=pic), VisualRequest("b", clip=clip, fps=2.0), VisualRequest("c", image=pic)],
        max_new_tokens=3,
        temperature=0.0,
        top_p=1.0,
        seed=[1, 2, 3],
    )
    assert out[0] == vlm.generate([pic], ["a"], max_new_tokens=3)[0]
    assert out[1] == vlm.generate_video([clip], ["b"], fps=2.0, max_new_tokens=3)[0]
    assert out[2] == out[0]
    with pytest.raises(TypeError, match="takes no video"):
        VisualChat(object()).chat([VisualRequest("b", clip=clip)], max_new_tokens=1, temperature=0, top_p=1, seed=[0])


def test_object_level_shows_the_key_frame_crop_and_asks_the_name_first(vlm, unit_parts) -> None:
    row, tracks = unit_parts
    seen = Recording(vlm)
    stage = VideoObjectText.configure({**SHORT, "category_max_tokens": 2, "category_retry_max_tokens": 3}, vlm=seen)
    [out] = run_stage(stage, video_unit([row], {"video_tracks": tracks})).table.to_pylist()
    visible, hidden = out["objects"]
    assert visible["frames"] == [0]  # equal areas: the earliest sampled frame is the key frame
    assert hidden == {
        "category": None,
        "object_id": 1,
        "text": None,
        "finish_reason": None,
        "frames": [],
        "error": "ValueError: object 1 is visible in no sampled frame",
    }
    crop, prompt = seen.pictures[0]
    # the 16 px square at x 4..20, y 8..24 grown by 20 % (3.2 px) a side: columns 0..24, rows 4..28
    assert crop.shape == (24, 24, 3) and "What is the object outlined in red" in prompt
    assert np.all(crop[4, 4] == OUTLINE_RGB)  # the square's corner is on the outline
    if visible["category"] is not None:
        assert f"one object, which is outlined in red: a {visible['category']}" in seen.pictures[-1][1]
    else:
        assert len(seen.pictures) == 1 and visible["error"].startswith("no usable object name")


def test_scene_and_video_levels_read_the_descriptions_before_them(vlm, unit_parts) -> None:
    row, tracks = unit_parts
    from grand_engine.stages.video_text import OBJECT_LEVEL, OBJECT_TEXT

    looks = [
        {
            "category": "white square",
            "object_id": 0,
            "text": "A white square.",
            "finish_reason": "stop",
            "frames": [0],
            "error": None,
        },
        {"category": None, "object_id": 1, "text": None, "finish_reason": None, "frames": [], "error": "x"},
    ]
    object_text = pa.Table.from_pylist(
        [{"image_id": "v", "objects": looks}],
        schema=pa.schema([("image_id", pa.string()), ("objects", pa.list_(OBJECT_LEVEL))]),
    )
    seen = Recording(vlm)
    unit = video_unit([row], {"video_tracks": tracks, "video_object_text": object_text})
    [scene] = run_stage(VideoSceneText.configure(SHORT, vlm=seen), unit).table.to_pylist()
    assert scene["objects"][0]["frames"] == [0] and scene["objects"][1]["error"].endswith(
        "object 1 has no video_object_text description (x)"
    )
    frame, prompt = seen.pictures[0]
    assert frame.shape == (48, 64, 3) and 'a white square. On its own it looks like this: "A white square."' in prompt
    where = [
        {"object_id": 0, "text": "It sits on black.", "finish_reason": "stop", "frames": [0], "error": None},
        {"object_id": 1, "text": None, "finish_reason": None, "frames": [], "error": "y"},
    ]
    scene_text = pa.Table.from_pylist(
        [{"image_id": "v", "objects": where}],
        schema=pa.schema([("image_id", pa.string()), ("objects", pa.list_(OBJECT_TEXT))]),
    )
    unit = video_unit(
        [row], {"video_tracks": tracks, "video_object_text": object_text, "video_scene_text": scene_text}
    )
    [motion] = run_stage(VideoMotionText.configure({**SHORT, "num_frames": 3}, vlm=seen), unit).table.to_pylist()
    # positions 0..3 spread over three frames: 0, 1.5 -> 2, 3 -> video frames 0, 8, 12
    assert motion["objects"][0]["frames"] == [0, 8, 12]
    clip, prompt, fps = seen.clips[0]
    assert len(clip) == 3 and fps == pytest.approx(2 / (12 / 24))  # three frames over half a second
    assert 'In its scene: "It sits on black."' in prompt
