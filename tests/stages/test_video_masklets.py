"""``video_masklets``: masklets checked against the video, aligned with the sampled frames and selected by the
size, duration and visibility thresholds; known answers from hand-made masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.stages.video_masklets import VideoMasklets
from grand_engine.testing import run_stage
from tests.io.video_shards import masklet_bytes, square_frames, square_masks, video_row, video_unit, write_video

N = 24  # frames: 6 annotated (0, 4, …, 20)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("masklets")
    video = folder / "v.mp4"
    write_video(video, square_frames(N))
    big = square_masks(N)  # 256 px, visible throughout
    empty = np.zeros_like(big[0])
    small = [np.zeros_like(m) for m in big]
    for m in small:
        m[0:4, 0:4] = True  # 16 px
    late = [m if k >= 20 else empty for k, m in enumerate(big)]  # visible in the last annotated frame only (20)
    flicker = [big[k] if (k // 4) % 2 == 0 else empty for k in range(N)]  # on, off, on, off, on, off
    manual = folder / "v_manual.json"
    manual.write_bytes(masklet_bytes("v", [big, small, late, flicker, [empty] * N], num_frames=N))
    auto = folder / "v_auto.json"
    auto.write_bytes(masklet_bytes("v", [big], num_frames=N, kind="auto"))
    wrong = folder / "wrong.json"
    wrong.write_bytes(masklet_bytes("v", [big[:20]], num_frames=20))
    return {"video": video, "manual": manual, "auto": auto, "wrong": wrong}


def row(files: dict[str, Path], **kw) -> dict:
    return video_row("v", files["video"], width=64, height=48, num_frames=N, **kw)


def test_selection_with_known_reasons(files: dict[str, Path]) -> None:
    stage = VideoMasklets.configure({"min_mean_area": 100, "min_duration": 0.5, "max_visibility_changes": 3})
    result = run_stage(stage, video_unit([row(files, manual=files["manual"], auto=files["auto"])]))
    [out] = result.table.to_pylist()
    assert out["num_masklets"] == 5  # use_auto is off: the manual file only
    [kept] = out["objects"]
    assert (kept["object_id"], kept["masklet_id"], kept["source"]) == (0, 0, "manual")
    assert kept["areas"] == [256] * 6 and kept["visible_fraction"] == 1.0 and kept["mean_area"] == 256.0
    assert kept["duration"] == 1.0 and kept["visibility_changes"] == 0 and kept["propagated"] == 0
    reasons = {r["object_id"]: r["reason"] for r in out["rejected"]}
    assert reasons == {
        1: "mean area 16 px, under min_mean_area = 100",
        2: "visible in 17% of the frames, under min_visible_fraction",
        3: "5 visibility changes, over max_visibility_changes",
        4: "never visible in the sampled frames",
    }


def test_auto_masklets_and_max_objects(files: dict[str, Path]) -> None:
    stage = VideoMasklets.configure(
        {
            "use_auto": True,
            "min_mean_area": 10,
            "min_visible_fraction": 0.0,
            "max_visibility_changes": 9,
            "min_duration": 0.0,
            "max_objects": 2,
        }
    )
    [out] = run_stage(stage, video_unit([row(files, manual=files["manual"], auto=files["auto"])])).table.to_pylist()
    assert out["num_masklets"] == 6
    # candidates by mean area: manual 0, 2 (late), 3 (flicker) and auto 0 (object 5) all 256 px, manual 1 16 px;
    # ties go to the lower object id, so 0 and 2 stay
    assert [(o["object_id"], o["source"]) for o in out["objects"]] == [(0, "manual"), (2, "manual")]
    reasons = {r["object_id"]: r["reason"] for r in out["rejected"]}
    assert reasons[5].startswith("more than max_objects = 2") and reasons[4] == "never visible in the sampled frames"


def test_alignment_with_denser_sampling(files: dict[str, Path]) -> None:
    stage = VideoMasklets.configure({"min_mean_area": 100, "min_duration": 0.0})
    unit = video_unit([row(files, manual=files["manual"], indices=[0, 2, 4, 6], sample_fps=12.0)])
    [out] = run_stage(stage, unit).table.to_pylist()
    obj = out["objects"][0]
    assert [m is None for m in obj["masks"]] == [False, True, False, True]
    assert obj["areas"] == [256, None, 256, None] and obj["visible_fraction"] == 1.0
    assert obj["duration"] == pytest.approx(3 / 12)  # positions 0..2 of a 12 fps sampling


def test_no_masklets_and_bad_masklets(files: dict[str, Path]) -> None:
    unit = video_unit([row(files), {**row(files, manual=files["wrong"]), "image_id": "w"}])
    result = run_stage(VideoMasklets.configure(), unit)
    assert result.table.to_pylist() == [{"image_id": "v", "objects": [], "num_masklets": 0, "rejected": []}]
    [error] = result.errors
    assert (error.image_id, error.error_type) == ("w", "MaskletFrameCountMismatch")
    assert "5 annotated frames, but a video of 24 frames annotated every 4 frames has 6" in error.message
