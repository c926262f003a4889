"""The ``videos`` root stage of the ``video`` input kind: a unit's video entries → its table of readable videos.

Every other video stage reads this table to know which videos exist, where their bytes and masklet files are
(shard path, byte offset and length, as the ``images`` table does for pictures) and which frames to look at: the
frames of the set rate ``sample_fps`` (:func:`grand_engine.io.video.sample_indices`). The key column
``image_id`` holds the video id (``sav_000001``), as the engine keys every table by its element.

An entry that cannot be used becomes an error row here, once, and the video is absent downstream: the shard
index's errors (``MissingVideo``, ``DuplicateMember``, ``TruncatedShard``, …), a member larger than
``max_video_bytes``, and what :func:`grand_engine.io.video.probe_video` finds (``NotAVideo``,
``UnsupportedCodec``, ``TruncatedVideo``, ``VideoTooLarge``), plus ``VideoTooSmall`` for frames under
``min_side`` pixels and ``EmptyVideo`` when no frame is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.io.images import MIN_SIDE_DEFAULT
from grand_engine.io.sa1b import Member, read_locator
from grand_engine.io.video import MAX_PIXELS_DEFAULT, VideoError, probe_video, sample_indices
from grand_engine.runtime.stage import ErrorRecord, Stage, StageResult, UnitInput
from grand_engine.schema import table_schema

VIDEOS_SCHEMA = table_schema(
    ("file_name", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps", pa.float32()),  # the stream's average frame rate
    ("num_frames", pa.int32()),  # frames that decode (the container's count when verify_decode is off)
    ("duration", pa.float32()),  # num_frames / fps, seconds
    ("codec", pa.string()),  # FFmpeg decoder name (h264, hevc, vp9, …)
    ("source", pa.string()),  # tar path or video file path
    ("offset", pa.int64()),  # byte offset of the video inside `source` (0 for plain files)
    ("size", pa.int64()),  # byte length of the video
    ("ann_source", pa.string()),  # manual masklets (<id>_manual.json) locator; null when the video has none
    ("ann_offset", pa.int64()),
    ("ann_size", pa.int64()),
    ("auto_source", pa.string()),  # automatic masklets (<id>_auto.json) locator; null when the video has none
    ("auto_offset", pa.int64()),
    ("auto_size", pa.int64()),
    ("sample_fps", pa.float32()),  # the rate the frames were sampled at
    ("frame_indices", pa.list_(pa.int32())),  # the sampled video frames (0-based), ascending
)
"""The ``videos`` root table: one row per readable video of a unit."""

MAX_VIDEO_BYTES_DEFAULT = 2 << 30
"""Largest video member read (2 GiB): a video is read whole into memory to be decoded; SA-V videos are 1–20 MB."""


class VideoTooSmall(VideoError):
    error_type = "VideoTooSmall"


class EmptyVideo(VideoError):
    error_type = "EmptyVideo"


@dataclass
class VideosStage(Stage):
    """Probe every video of the unit, record where its bytes and masklets live and which frames to sample."""

    name: ClassVar[str] = "videos"
    requires: ClassVar[tuple[str, ...]] = ()
    level: ClassVar[int | None] = None
    schema: ClassVar[pa.Schema] = VIDEOS_SCHEMA

    sample_fps: float = 6.0  # SA-V's annotation rate (every 4th frame of its 24 fps videos), so frames meet masklets
    max_sampled_frames: int | None = None  # new: thin long videos evenly to this many frames (null: keep all)
    max_video_bytes: int = MAX_VIDEO_BYTES_DEFAULT  # larger members are refused before they are read into memory
    max_pixels: int = MAX_PIXELS_DEFAULT  # frames larger than this are refused (decoding them would exhaust memory)
    min_side: int = MIN_SIDE_DEFAULT  # as for images: model processors misread frames under 8 px a side
    verify_decode: bool = True  # decode every frame once here so truncated or corrupt videos fail in one place

    def __post_init__(self) -> None:
        if self.sample_fps <= 0:
            raise ValueError(f"sample_fps must be > 0, got {self.sample_fps}")
        if self.max_sampled_frames is not None and self.max_sampled_frames < 1:
            raise ValueError(f"max_sampled_frames must be >= 1 or null, got {self.max_sampled_frames}")

    def process_unit(self, unit: UnitInput) -> StageResult:
        rows: list[dict[str, Any]] = []
        errors: list[ErrorRecord] = []
        for member in unit.members:
            try:
                rows.append(self._row(member))
            except _EntryError as exc:  # the shard index's message names the shard and the member already
                errors.append(ErrorRecord(member.image_id, exc.error_type, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad entry never stops the unit
                error_type = getattr(exc, "error_type", None) or type(exc).__name__
                errors.append(ErrorRecord(member.image_id, error_type, f"{member.file_name}: {exc or repr(exc)}"))
        return StageResult(self.to_table(rows), errors)

    def _row(self, member: Member) -> dict[str, Any]:
        if member.error_type:
            raise _EntryError(member.error_type, member.error or member.error_type)
        if member.image is None:
            raise _EntryError("MissingVideo", "no video data")
        if member.image.size > self.max_video_bytes:
            raise VideoError(
                f"{member.image.size} bytes, more than max_video_bytes = {self.max_video_bytes} "
                "(refused unread; raise max_video_bytes to accept it)"
            )
        info = probe_video(read_locator(member.image), max_pixels=self.max_pixels, count_frames=self.verify_decode)
        if min(info.width, info.height) < self.min_side:
            raise VideoTooSmall(f"{info.width}x{info.height} frames, a side under min_side = {self.min_side}")
        indices = sample_indices(info.num_frames, info.fps, self.sample_fps, self.max_sampled_frames)
        if not indices:
            raise EmptyVideo("the container declares no frames (set verify_decode to count them by decoding)")
        manual, auto = member.annotation, member.extra.get("auto")
        return {
            "image_id": member.image_id,
            "file_name": member.file_name,
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "num_frames": info.num_frames,
            "duration": info.duration,
            "codec": info.codec,
            "source": member.image.source,
            "offset": member.image.offset,
            "size": member.image.size,
            "ann_source": manual.source if manual else None,
            "ann_offset": manual.offset if manual else None,
            "ann_size": manual.size if manual else None,
            "auto_source": auto.source if auto else None,
            "auto_offset": auto.offset if auto else None,
            "auto_size": auto.size if auto else None,
            "sample_fps": min(self.sample_fps, info.fps) if info.fps > 0 else self.sample_fps,
            "frame_indices": indices,
        }


class _EntryError(Exception):
    """Carries the shard index's own error type through to the error row."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
