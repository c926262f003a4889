"""Video input: shard listing and indexing, decoding with PyAV, frame sampling, SA-V masklet parsing, the frame
cache. Known answers are worked out from the files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grand_engine.io import rle
from grand_engine.io.sa1b import Locator
from grand_engine.io.video import (
    FrameCache,
    MalformedMasklets,
    MaskletFrameCountMismatch,
    MaskletSizeMismatch,
    NotAVideo,
    TruncatedVideo,
    UnsupportedCodec,
    VideoTooLarge,
    decode_frames,
    encode_video,
    expected_annotated_frames,
    index_video_shard,
    list_video_shards,
    parse_masklets,
    probe_video,
    sample_indices,
    split_video_name,
)
from tests.io.video_shards import flat_frames, masklet_bytes, square_masks, write_tar


@pytest.fixture(scope="module")
def clip() -> bytes:
    """12 flat frames, grey levels 0, 20, …, 220, 64x48, 24 fps."""
    return encode_video(flat_frames(range(0, 240, 20)))


# -- names, listing, indexing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sav_000001.mp4", ("sav_000001.mp4", "sav_000001", "video")),
        ("dir/sav_000001_manual.json", ("sav_000001_manual.json", "sav_000001", "manual")),
        ("sav_000001_auto.json", ("sav_000001_auto.json", "sav_000001", "auto")),
        ("clip.MOV", ("clip.MOV", "clip", "video")),
        ("clip.json", ("clip.json", "clip", "manual")),
        ("_auto.json", ("_auto.json", "_auto", "manual")),
        ("README.txt", None),
        ("photo.jpg", None),
    ],
)
def test_split_video_name(name: str, expected: tuple | None) -> None:
    assert split_video_name(name) == expected


def test_tar_index_pairs_videos_with_their_masklets(tmp_path: Path, clip: bytes) -> None:
    shard = write_tar(
        tmp_path / "sav_000.tar",
        [
            ("sav_000/sav_000001.mp4", clip),
            ("sav_000/sav_000001_manual.json", b"{}"),
            ("sav_000/sav_000001_auto.json", b"{ }"),
            ("sav_000/sav_000002.mp4", clip),
            ("sav_000/sav_000003_manual.json", b"{}"),
            ("sav_000/sav_000002.mp4", clip),
            ("sav_000/notes.txt", b"ignored"),
        ],
    )
    index = index_video_shard(shard)
    by_id = [(m.image_id, m.file_name, m.error_type) for m in index.members]
    assert by_id == [
        ("sav_000001", "sav_000001.mp4", None),
        ("sav_000002", "sav_000002.mp4", None),
        ("sav_000003", "sav_000003_manual.json", "MissingVideo"),
        ("sav_000002", "sav_000002.mp4", "DuplicateMember"),
    ]
    first = index.members[0]
    assert first.image.size == len(clip)
    assert first.annotation.size == 2 and first.extra["auto"].size == 3
    data = shard.read_bytes()
    assert data[first.image.offset : first.image.offset + first.image.size] == clip
    assert index.members[1].annotation is None and index.members[1].extra == {}


def test_folder_index_ignores_stray_masklets_and_lists_only_video_folders(tmp_path: Path, clip: bytes) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "b.mp4").write_bytes(clip)
    (folder / "a.webm").write_bytes(b"not really webm")
    (folder / "b_manual.json").write_bytes(b"{}")
    (folder / "orphan_manual.json").write_bytes(b"{}")
    index = index_video_shard(folder)
    assert [(m.image_id, m.error_type, m.annotation is not None) for m in index.members] == [
        ("a", None, False),
        ("b", None, True),
    ]
    assert list_video_shards([folder]) == [folder.resolve()]
    assert list_video_shards([str(tmp_path / "*")]) == [folder.resolve()]
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no .tar files and no videos"):
        list_video_shards([tmp_path / "photos"])


def test_cut_tar_and_member_round_trip(tmp_path: Path, clip: bytes) -> None:
    shard = write_tar(tmp_path / "s.tar", [("v.mp4", clip), ("w.mp4", clip)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[: 512 + len(clip) // 2])
    index = index_video_shard(cut)
    # the cut falls inside v.mp4: that member says so (once), w.mp4 is never seen
    assert [(m.image_id, m.error_type) for m in index.members] == [("v", "TruncatedShard")]
    from grand_engine.io.sa1b import Member

    again = [Member.from_json(json.loads(json.dumps(m.to_json()))) for m in index_video_shard(shard).members]
    assert again == index_video_shard(shard).members


# -- decoding ---------------------------------------------------------------------------------------------------


def test_probe_and_decode_known_frames(clip: bytes) -> None:
    info = probe_video(clip)
    assert (info.width, info.height, info.num_frames, info.codec) == (64, 48, 12, "h264")
    assert info.fps == 24.0 and info.duration == 0.5
    frames = decode_frames(clip, [0, 5, 11])
    assert [f.shape for f in frames] == [(48, 64, 3)] * 3
    # flat grey frames survive H.264 (yuv420p, crf 20) within a few levels
    assert [round(float(f.mean())) for f in frames] == pytest.approx([0, 100, 220], abs=4)


def test_decode_frames_keeps_the_requested_order(clip: bytes) -> None:
    a, b = decode_frames(clip, [11, 0])
    assert a.mean() > 200 > 10 > b.mean()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotAVideo),
        (b"this is not a video at all" * 20, NotAVideo),
    ],
)
def test_probe_refuses_non_videos(data: bytes, error: type) -> None:
    with pytest.raises(error):
        probe_video(data)


def test_cut_video_is_truncated(clip: bytes) -> None:
    big = encode_video([np.random.default_rng(k).integers(0, 256, (48, 64, 3), np.uint8) for k in range(12)])
    with pytest.raises(TruncatedVideo, match="of the 12 frames"):
        probe_video(big[: int(len(big) * 0.6)])
    with pytest.raises(TruncatedVideo):
        decode_frames(big[: int(len(big) * 0.6)], [11])


def test_unknown_codec_and_size_limit(clip: bytes) -> None:
    # the sample entry of the H.264 stream renamed to a codec tag no FFmpeg build knows
    assert clip.count(b"avc1") >= 1
    with pytest.raises(UnsupportedCodec):
        probe_video(clip.replace(b"avc1", b"zzzz"))
    with pytest.raises(VideoTooLarge, match="64x48"):
        probe_video(clip, max_pixels=64 * 48 - 1)


@pytest.mark.parametrize(
    ("num_frames", "fps", "rate", "limit", "expected"),
    [
        (10, 24.0, 6.0, None, [0, 4, 8]),
        (13, 24.0, 6.0, None, [0, 4, 8, 12]),
        (5, 24.0, 30.0, None, [0, 1, 2, 3, 4]),
        (10, 25.0, 10.0, None, [0, 2, 5, 8]),  # steps of 2.5 rounded half to even: 0, 2, 5, 8 (7.5 -> 8)
        (24, 24.0, 6.0, 3, [0, 8, 20]),  # 0 4 8 12 16 20 thinned to positions 0, 2(.5->2), 5
        (0, 24.0, 6.0, None, []),
    ],
)
def test_sample_indices(num_frames: int, fps: float, rate: float, limit: int | None, expected: list[int]) -> None:
    assert sample_indices(num_frames, fps, rate, limit) == expected


def test_frame_cache_hits_and_budget(tmp_path: Path, clip: bytes) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(clip)
    loc = Locator(str(path), 0, len(clip))
    cache = FrameCache(max_bytes=2 * 64 * 48 * 3)  # room for two frames
    first = cache.frames(loc, [0, 4])
    again = cache.frames(loc, [0, 4])
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    assert not first[0].flags.writeable
    cache.frames(loc, [8])  # does not fit next to the first entry: the first is evicted
    assert cache.bytes == 64 * 48 * 3
    cache.frames(loc, [0, 4])
    assert cache.misses == 3
    big = cache.frames(loc, [0, 1, 2])  # larger than the whole budget: returned, never kept
    assert len(big) == 3 and cache.bytes <= cache.max_bytes


# -- masklets ---------------------------------------------------------------------------------------------------


def test_parse_masklets_reads_every_annotated_frame() -> None:
    masks = square_masks(9)
    empty = np.zeros_like(masks[0])
    raw = masklet_bytes("v", [masks, [empty] * 9], num_frames=9)
    parsed = parse_masklets(raw, width=64, height=48, num_frames=9, role="manual")
    assert expected_annotated_frames(9, 4) == 3
    assert [(m.object_id, m.source) for m in parsed] == [(0, "manual"), (1, "manual")]
    assert parsed[0].areas == [256, 256, 256]
    assert parsed[1].areas == [0, 0, 0]
    assert np.array_equal(rle.decode(parsed[0].masks[2]), masks[8])


def test_parse_masklets_errors() -> None:
    masks = square_masks(9)
    good = json.loads(masklet_bytes("v", [masks], num_frames=9))
    with pytest.raises(MaskletFrameCountMismatch, match="3 annotated frames, but a video of 13 frames"):
        parse_masklets(json.dumps(good), width=64, height=48, num_frames=13)
    with pytest.raises(MaskletSizeMismatch, match="decodes to 32x48"):
        parse_masklets(json.dumps(good), width=32, height=48, num_frames=9)
    no_size = dict(good, video_height=None, video_width=None)
    with pytest.raises(MaskletSizeMismatch, match="object 0, annotated frame 0"):
        parse_masklets(json.dumps(no_size), width=32, height=48, num_frames=9)
    bad_counts = json.loads(json.dumps(good))
    bad_counts["masklet"][1][0]["counts"] = "~~~"
    with pytest.raises(MalformedMasklets, match="annotated frame 1"):
        parse_masklets(json.dumps(bad_counts), width=64, height=48, num_frames=9)
    ragged = json.loads(json.dumps(good))
    ragged["masklet"][2] = []
    with pytest.raises(MalformedMasklets, match="frame 2 has 0 masks for 1 objects"):
        parse_masklets(json.dumps(ragged), width=64, height=48, num_frames=9)
    for broken in (b"[1, 2]", b"{", json.dumps({**good, "masklet_num": 4}).encode()):
        with pytest.raises(MalformedMasklets):
            parse_masklets(broken, width=64, height=48, num_frames=9)


def test_parse_masklets_accepts_uncompressed_counts_and_no_annotation() -> None:
    doc = {
        "masklet_id": [7],
        "masklet": [[{"size": [2, 3], "counts": [1, 2, 3]}], [None]],
    }
    [m] = parse_masklets(json.dumps(doc), width=3, height=2, num_frames=2, stride=1)
    assert m.object_id == 7 and m.areas == [2, None]
    assert rle.decode(m.masks[0]).sum() == 2 and m.masks[1] is None
