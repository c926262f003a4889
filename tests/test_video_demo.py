"""The video engine end to end on the demo shard: ``grand-engine run --input video`` with the ``video_tiny``
manifest (tiny checkpoints, inline backend; the Ray backend must write the same tables), then the Ref-SAV export
and the video explorer. Known answers: the demo's broken entries and the cat's masks, which the demo builds from
its photo and camera path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from grand_engine.config import load_manifest
from grand_engine.demo import _regions
from grand_engine.demo_video import _object_mask, _photo, build_video_demo_shard, camera_path, render_clip
from grand_engine.explore.video import build_video_site, overlay, spread
from grand_engine.grandf.exports import export
from grand_engine.grandf.reader import read_unit
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.runtime.run import run
from tests.models.video_checkpoints import video_tiny_dir  # noqa: F401

pytestmark = pytest.mark.slow

W, H, N = 96, 72, 24  # a small demo: 24 frames at 24 fps, 6 annotated
UNIT = "sav_000000/00000"
FAST = [
    "video_tracks.points_per_side=1",
    "video_object_text.max_tokens=3",
    "video_object_text.retry_max_tokens=4",
    "video_scene_text.max_tokens=3",
    "video_scene_text.retry_max_tokens=4",
    "video_motion_text.max_tokens=3",
    "video_motion_text.retry_max_tokens=4",
    "video_expression.max_tokens=8",
    "video_expression.retry_max_tokens=12",
    "video_expression.checklist_max_tokens=8",
    "video_expression.checklist_retry_max_tokens=12",
    "video_expression.max_rounds=0",
]


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory, video_tiny_dir: Path) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("video_demo")
    build_video_demo_shard(root / "shards", width=W, height=H, num_frames=N)
    variables = {"tiny_dir": str(video_tiny_dir), "llm_dir": str(video_tiny_dir / "llama")}
    manifest = load_manifest("video_tiny", overrides=FAST, variables=variables)
    _, summary = run(manifest, [str(root / "shards")], str(root / "out"), backend="inline", progress=False)
    assert summary.ok
    return root / "out"


def errors(out: Path) -> dict[str, tuple[str, str]]:
    found = {}
    for path in sorted((out / "_errors").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            found[row["image_id"]] = (row["stage"], row["error_type"])
    return found


def test_bad_entries_become_error_rows(output: Path) -> None:
    assert errors(output) == {
        "sav_000003": ("videos", "TruncatedVideo"),
        "sav_000004": ("video_masklets", "MaskletFrameCountMismatch"),
        "sav_000005": ("videos", "MissingVideo"),
    }


def test_the_cat_masklet_follows_the_camera(output: Path) -> None:
    store = OutputStore(output)
    videos = {r["image_id"]: r for r in read_unit(store, "videos", UNIT).to_pylist()}
    assert sorted(videos) == ["sav_000001", "sav_000002", "sav_000004"]
    assert videos["sav_000001"]["frame_indices"] == [0, 4, 8, 12, 16, 20]
    cat = _photo("chelsea")
    mask = _object_mask(cat)
    ys, xs = np.nonzero(mask)
    boxes = camera_path(cat.shape[1], cat.shape[0], W / H, N, (float(xs.mean()), float(ys.mean())))
    expected = render_clip(mask, boxes, (W, H))
    [obj] = {r["image_id"]: r for r in read_unit(store, "video_masklets", UNIT).to_pylist()}["sav_000001"]["objects"]
    assert obj["source"] == "manual" and obj["areas"] == [int(expected[f].sum()) for f in range(0, N, 4)]
    assert np.array_equal(rle.decode(obj["masks"][3]), expected[12])
    tracks = {r["image_id"]: r for r in read_unit(store, "video_tracks", UNIT).to_pylist()}
    assert tracks["sav_000001"]["objects"][0]["masks"] == obj["masks"]  # every frame annotated: unchanged
    created = tracks["sav_000002"]
    assert created["candidates"] == 1 and all(o["source"] == "sam2" for o in created["objects"])
    assert len(_regions(cat)) >= 10  # the demo's segmentation found the regions it picks from


def test_every_described_object_has_an_entry_at_each_level(output: Path) -> None:
    store = OutputStore(output)
    for stage in ("video_object_text", "video_scene_text", "video_motion_text", "video_expression"):
        rows = {r["image_id"]: r for r in read_unit(store, stage, UNIT).to_pylist()}
        assert sorted(rows) == ["sav_000001", "sav_000002"]
        assert [o["object_id"] for o in rows["sav_000001"]["objects"]] == [0]


def test_export_and_explorer(output: Path, tmp_path: Path) -> None:
    report = export(output, "ref-sav", tmp_path / "ref_sav")
    meta = json.loads((tmp_path / "ref_sav" / "meta_expressions.json").read_text())
    masks = json.loads((tmp_path / "ref_sav" / "mask_dict.json").read_text())
    assert report.invalid == 0 and report.records == len(meta["videos"])
    for video_id, video in meta["videos"].items():
        assert video["frames"] == [f"{i:05d}" for i in range(0, N, 4)] and video_id == "sav_000001"
        for exp in video["expressions"].values():
            assert exp["exp"] and len(masks[exp["anno_id"][0]]) == 6
    site = build_video_site(output, tmp_path / "site", frames=3)
    assert site.pages == 2 and not site.unreadable
    page = (tmp_path / "site" / "videos" / "sav_000001.html").read_text()
    assert "object level" in page and "video level" in page and "frame 20 (0.83 s)" in page
    assert (tmp_path / "site" / "media" / "sav_000001_00000.jpg").is_file()
    assert "sav_000002" in (tmp_path / "site" / "index.html").read_text()


def test_a_second_run_finds_nothing_to_do(output: Path, video_tiny_dir: Path) -> None:  # noqa: F811
    variables = {"tiny_dir": str(video_tiny_dir), "llm_dir": str(video_tiny_dir / "llama")}
    manifest = load_manifest("video_tiny", overrides=FAST, variables=variables)
    plan, summary = run(manifest, [str(output.parent / "shards")], str(output), backend="inline", progress=False)
    assert summary.ok and not plan.pending


def test_the_ray_backend_writes_the_same_tables(
    output: Path,
    ray_cluster,
    tmp_path: Path,
    video_tiny_dir: Path,  # noqa: F811
) -> None:
    variables = {"tiny_dir": str(video_tiny_dir), "llm_dir": str(video_tiny_dir / "llama")}
    manifest = load_manifest("video_tiny", overrides=FAST, variables=variables)
    plan, summary = run(
        manifest, [str(output.parent / "shards")], str(tmp_path / "ray"), backend="ray", progress=False
    )
    assert summary.ok and summary.units_done == 1 and summary.error_rows == 3
    for stage in plan.pipeline.order:
        assert read_unit(OutputStore(tmp_path / "ray"), stage, UNIT).equals(
            read_unit(OutputStore(output), stage, UNIT)
        )
    assert errors(tmp_path / "ray") == errors(output)


def test_overlay_and_spread() -> None:
    frame = np.zeros((6, 6, 3), np.uint8)
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    out = overlay(frame, [(0, mask)], alpha=0.5)
    assert (out[0, 0] == 0).all() and (out[2, 2] > 0).any()
    assert spread(3, 2) == [0, 1] and spread(3, 9) == [0, 4, 8]
