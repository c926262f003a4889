"""The ``videos`` root stage: one row per readable video with its locators and sampled frames; every bad entry an
error row naming the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.io.video import encode_video, index_video_shard
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.video_input import VIDEOS_SCHEMA, VideosStage
from tests.io.video_shards import flat_frames, masklet_bytes, square_masks, write_tar


def run_root(stage: VideosStage, shard: Path):
    members = index_video_shard(shard).members
    unit = UnitInput("s/00000", VIDEOS_SCHEMA.empty_table(), members=members)
    return stage.process(unit)


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    good = encode_video(flat_frames(range(0, 200, 20)))  # 10 frames at 24 fps
    noisy = encode_video([np.random.default_rng(k).integers(0, 256, (48, 64, 3), np.uint8) for k in range(10)])
    tiny = encode_video(flat_frames([10, 20], width=6, height=6))
    return write_tar(
        folder / "sav_000.tar",
        [
            ("sav_000001.mp4", good),
            ("sav_000001_manual.json", masklet_bytes("sav_000001", [square_masks(10)], num_frames=10)),
            ("sav_000001_auto.json", b"{}"),
            ("sav_000002.mp4", noisy[: len(noisy) // 2]),
            ("sav_000003.mp4", b"GIF89a not a video"),
            ("sav_000004.mp4", tiny),
            ("sav_000005_auto.json", b"{}"),
        ],
    )


def test_rows_and_error_rows(shard: Path) -> None:
    result = run_root(VideosStage.configure(), shard)
    [row] = result.table.to_pylist()
    assert row["image_id"] == "sav_000001"
    assert (row["width"], row["height"], row["num_frames"], row["fps"], row["codec"]) == (64, 48, 10, 24.0, "h264")
    assert row["duration"] == pytest.approx(10 / 24)
    assert row["frame_indices"] == [0, 4, 8] and row["sample_fps"] == 6.0
    data = shard.read_bytes()
    assert data[row["offset"] : row["offset"] + 4] == b"\x00\x00\x00 "  # the MP4's first box
    assert row["ann_source"] == str(shard) and row["ann_size"] > 100 and row["auto_size"] == 2
    errors = {e.image_id: (e.error_type, e.message) for e in result.errors}
    assert errors["sav_000002"][0] == "TruncatedVideo"
    assert errors["sav_000003"][0] == "NotAVideo"
    assert errors["sav_000004"] == ("VideoTooSmall", "sav_000004.mp4: 6x6 frames, a side under min_side = 8")
    assert errors["sav_000005"][0] == "MissingVideo"
    assert set(errors) == {"sav_000002", "sav_000003", "sav_000004", "sav_000005"}


def test_parameters_change_sampling_and_limits(shard: Path) -> None:
    result = run_root(VideosStage.configure({"sample_fps": 12.0, "max_sampled_frames": 3, "min_side": 4}), shard)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert rows["sav_000001"]["frame_indices"] == [0, 4, 8]  # 0 2 4 6 8 thinned to three, ends kept
    assert rows["sav_000004"]["frame_indices"] == [0]  # two frames at 24 fps sampled every second frame
    big = run_root(VideosStage.configure({"max_video_bytes": 100}), shard)
    assert {e.error_type for e in big.errors if e.image_id == "sav_000001"} == {"VideoError"}
    with pytest.raises(ValueError, match="sample_fps"):
        VideosStage.configure({"sample_fps": 0})
