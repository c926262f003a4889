"""``video_tracks``: candidate selection and the point grid with hand-made masks; completion and creation with the
tiny SAM 2 video checkpoint (random weights: only what the stage guarantees is checked, never what SAM 2 sees)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.models.base import load_adapter
from grand_engine.stages.video_masklets import VIDEO_MASKLETS_SCHEMA
from grand_engine.stages.video_tracks import VideoTracks, even_subset, grid_points, pick_candidates
from grand_engine.testing import run_stage
from tests.io.video_shards import square_frames, square_masks, video_row, video_unit, write_video
from tests.models.video_checkpoints import video_tiny_dir  # noqa: F401


def test_grid_points_are_cell_centres() -> None:
    assert grid_points(40, 20, 2) == [(10.0, 5.0), (30.0, 5.0), (10.0, 15.0), (30.0, 15.0)]


def test_even_subset_keeps_both_ends() -> None:
    assert even_subset([1, 2, 3], 5) == [1, 2, 3]
    assert even_subset([0, 4, 8, 12, 16, 20], 3) == [0, 8, 20]  # linspace 0, 2.5, 5 -> 0, 2, 5


def box(top: int, left: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((20, 20), bool)
    m[top : top + h, left : left + w] = True
    return m


def test_pick_candidates_filters_by_score_area_and_overlap() -> None:
    masks = [
        box(0, 0, 10, 10),  # 0: 100 px, score 2
        box(0, 0, 10, 9),  # 1: 90 px, IoU 0.9 with 0, score 1.5 -> a duplicate of 0
        box(12, 12, 5, 5),  # 2: 25 px, score 1
        box(0, 0, 20, 20),  # 3: the whole frame -> over max_area_fraction
        box(15, 0, 2, 2),  # 4: 4 px -> under min_area_fraction
        box(12, 0, 6, 6),  # 5: 36 px but score -1 -> under min_score
    ]
    scores = np.array([2.0, 1.5, 1.0, 3.0, 5.0, -1.0])
    kw = {"min_score": 0.0, "min_area_fraction": 0.05, "max_area_fraction": 0.8, "nms_iou": 0.7}
    assert pick_candidates(masks, scores, limit=5, **kw) == [0, 2]
    assert pick_candidates(masks, scores, limit=1, **kw) == [0]
    assert pick_candidates(masks, scores, limit=5, **{**kw, "nms_iou": 0.95}) == [0, 1, 2]
    assert pick_candidates([], np.zeros(0), limit=5, **kw) == []


@pytest.fixture(scope="module")
def sam2(video_tiny_dir: Path):  # noqa: F811
    return load_adapter(ModelSpec(id=str(video_tiny_dir / "sam2-video"), family="sam2_video", dtype="float32"))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tracks") / "v.mp4"
    write_video(path, square_frames(8))
    return path


def masklets_table(video_id: str, objects: list[dict]) -> pa.Table:
    row = {"image_id": video_id, "objects": objects, "num_masklets": len(objects), "rejected": []}
    return pa.Table.from_pylist([row], schema=VIDEO_MASKLETS_SCHEMA)


def test_completion_fills_only_the_missing_frames(sam2, video: Path) -> None:
    masks = square_masks(8)
    given = [rle.encode(masks[0]), None, rle.encode(masks[4]), None]  # sampled frames 0, 2, 4, 6
    complete = [rle.encode(masks[k]) for k in (0, 2, 4, 6)]
    objects = [
        {
            "object_id": 0,
            "masklet_id": 3,
            "source": "manual",
            "masks": given,
            "areas": [256, None, 256, None],
            "visible_fraction": 1.0,
            "mean_area": 256.0,
            "duration": 0.5,
            "visibility_changes": 0,
            "propagated": 0,
        },
        {
            "object_id": 1,
            "masklet_id": 4,
            "source": "manual",
            "masks": complete,
            "areas": [256] * 4,
            "visible_fraction": 1.0,
            "mean_area": 256.0,
            "duration": 0.5,
            "visibility_changes": 0,
            "propagated": 0,
        },
    ]
    row = video_row("v", video, width=64, height=48, num_frames=8, indices=[0, 2, 4, 6], sample_fps=12.0)
    unit = video_unit([row], {"video_masklets": masklets_table("v", objects)})
    [out] = run_stage(VideoTracks.configure(sam2=sam2), unit).table.to_pylist()
    first, second = out["objects"]
    assert (out["created"], out["candidates"]) == (0, 0)
    assert first["propagated"] == 2 and all(m is not None for m in first["masks"])
    assert first["masks"][0] == given[0] and first["masks"][2] == given[2]  # annotated frames keep their masks
    assert first["areas"][0] == 256 and first["areas"][1] == int(rle.area(first["masks"][1])[0])
    assert (first["masklet_id"], first["source"]) == (3, "manual")
    assert second == objects[1]  # nothing missing: passed through unchanged


def test_creation_for_a_video_without_masklets(sam2, video: Path) -> None:
    row = video_row("v", video, width=64, height=48, num_frames=8, indices=[0, 4])
    unit = video_unit([row], {"video_masklets": masklets_table("v", [])})
    stage = VideoTracks.configure(
        {"points_per_side": 2, "min_object_score": -1e9, "min_area_fraction": 0.0, "max_new_objects": 3}, sam2=sam2
    )
    [out] = run_stage(stage, unit).table.to_pylist()
    assert out["candidates"] == 4 and 1 <= out["created"] <= 3 and len(out["objects"]) == out["created"]
    for n, obj in enumerate(out["objects"]):
        assert (obj["object_id"], obj["masklet_id"], obj["source"], obj["propagated"]) == (n, None, "sam2", 1)
        assert len(obj["masks"]) == 2 and all(m["size"] == [48, 64] for m in obj["masks"])
    none = VideoTracks.configure({"points_per_side": 2, "min_object_score": 1e9}, sam2=sam2)
    [empty] = run_stage(none, unit).table.to_pylist()
    assert (empty["objects"], empty["created"], empty["candidates"]) == ([], 0, 4)
    off = VideoTracks.configure({"create": False}, sam2=sam2)
    assert run_stage(off, unit).table.to_pylist()[0]["objects"] == []
