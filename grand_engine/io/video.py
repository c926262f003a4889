"""Video input: list and index video shards, decode sampled frames with PyAV, parse SA-V masklets.

A shard is a tar file or a folder holding videos (``.mp4``, ``.mov``, ``.m4v``, ``.webm``, ``.mkv``, ``.avi``),
each optionally with SA-V style masklet files next to it: ``<id>_manual.json`` (human masklets; a plain
``<id>.json`` counts as manual too) and ``<id>_auto.json`` (automatic masklets). Indexing reuses the SA-1B reader's
header-only tar scan (:mod:`grand_engine.io.sa1b`), so a tar is never extracted and every bad member becomes an
entry with an error (``TruncatedShard``, ``UnsafeMemberName``, ``DuplicateMember``, ``NotARegularFile``, …);
a masklet file without its video is ``MissingVideo`` in a tar and ignored in a folder. A member's ``image`` locator
is the video, ``annotation`` the manual masklets and ``extra["auto"]`` the automatic ones.

**SA-V masklet files** (``facebookresearch/sam2``, ``sav_dataset/README.md``): a JSON object whose ``masklet`` is a
list over annotated frames of a list over objects of COCO compressed RLEs, with ``masklet_id`` (one id per object)
and ``video_height``/``video_width``/``video_frame_count``. SA-V videos are 24 fps and annotated every 4th frame
(6 fps), so a video of ``n`` frames has ``ceil(n / 4)`` annotated frames; annotated frame ``k`` is video frame
``4 k``. An empty RLE means the object is not visible in that frame. :func:`parse_masklets` checks all of this
against the decoded video and raises :class:`MaskletError` subclasses naming the file, the object and the frame.

**Decoding** (PyAV): :func:`probe_video` opens the bytes, reads the first video stream's size, rate and codec, and
(by default) decodes every frame once to count them, so a truncated or corrupt file fails here, in one place:
``NotAVideo`` (no video stream, not a container), ``UnsupportedCodec`` (no decoder for the stream),
``TruncatedVideo`` (fewer frames decode than the container declares, or decoding stops on bad data),
``VideoTooLarge`` (more pixels per frame than ``max_pixels``). :func:`sample_indices` picks the frames of a set
rate and :func:`decode_frames` returns them as ``H×W×3`` uint8 RGB arrays; :class:`FrameCache` keeps the frames of
the videos in flight so the stages one process runs on a unit decode each video once.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.io import rle as rle_lib
from grand_engine.io.inputs import InputKind
from grand_engine.io.sa1b import (
    Locator,
    Member,
    ShardIndex,
    _Entry,
    _index_tar,
    list_shards,
    read_locator,
)

__all__ = [
    "ANNOTATION_STRIDE_DEFAULT",
    "VIDEO",
    "VIDEO_EXTENSIONS",
    "FrameCache",
    "Masklet",
    "MaskletError",
    "MaskletFrameCountMismatch",
    "MaskletSizeMismatch",
    "MalformedMasklets",
    "VideoError",
    "VideoInfo",
    "decode_frames",
    "index_video_shard",
    "is_video_name",
    "list_video_shards",
    "parse_masklets",
    "probe_video",
    "sample_indices",
    "split_video_name",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")
MASKLET_ROLES = {"_manual": "manual", "_auto": "auto"}
"""Masklet file suffixes (before ``.json``) and their role."""
ANNOTATION_STRIDE_DEFAULT = 4
"""SA-V annotates every 4th frame of its 24 fps videos (6 fps; ``sav_dataset/README.md``, ``annot_sample_rate``)."""
MAX_PIXELS_DEFAULT = 16_000_000
"""Largest accepted width×height of a frame (about 4K UHD twice over); SA-V videos are ~848×480 to 1920×1080."""


# -- errors ------------------------------------------------------------------------------------------------------


class VideoError(ValueError):
    """A video that cannot be used; ``error_type`` names the reason for the error row."""

    error_type = "VideoError"


class NotAVideo(VideoError):
    error_type = "NotAVideo"


class UnsupportedCodec(VideoError):
    error_type = "UnsupportedCodec"


class TruncatedVideo(VideoError):
    error_type = "TruncatedVideo"


class VideoTooLarge(VideoError):
    error_type = "VideoTooLarge"


class MaskletError(ValueError):
    """Base class of the masklet-file errors."""


class MalformedMasklets(MaskletError):
    """The file does not parse or lacks the SA-V structure, or an RLE is malformed."""


class MaskletSizeMismatch(MaskletError):
    """A mask (or the file's ``video_height``/``video_width``) disagrees with the decoded frame size."""


class MaskletFrameCountMismatch(MaskletError):
    """The file has another number of annotated frames than the video has at the annotation stride."""


# -- names, listing and indexing -------------------------------------------------------------------------------


def is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def split_video_name(name: str) -> tuple[str, str, str] | None:
    """``(base name, video id, kind)`` of a member name, kind ``video`` | ``manual`` | ``auto``; None otherwise.

    ``sav_000001.mp4`` → ``("sav_000001.mp4", "sav_000001", "video")``; ``sav_000001_auto.json`` →
    ``("sav_000001_auto.json", "sav_000001", "auto")``; ``clip.json`` → ``("clip.json", "clip", "manual")``.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, _ext = base.rpartition(".")
    if not dot or not stem:
        return None
    if is_video_name(base):
        return base, stem, "video"
    if not base.lower().endswith(".json"):
        return None
    for suffix, role in MASKLET_ROLES.items():
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return base, stem[: -len(suffix)], role
    return base, stem, "manual"


def list_video_shards(specs: Sequence[str | Path]) -> list[Path]:
    """Shard paths for ``specs``: ``.tar`` files, folders of tars or of videos, or globs (as SA-1B shards)."""
    return list_shards(specs, is_member=is_video_name, what="video")


def _pair_videos(entries: list[_Entry], *, shard: str, strict: bool, tail: Member | None) -> list[Member]:
    """One member per video id (in the order of the videos), its masklet files attached by role."""
    first: dict[tuple[str, str], _Entry] = {}
    for e in entries:
        if e.problem is None or e.problem[0] not in ("UnsafeMemberName", "NotARegularFile"):
            first.setdefault((e.stem, e.kind), e)
    videos = {stem for stem, kind in first if kind == "video"}
    tail_note = f"; the shard has an unreadable tail ({tail.error})" if tail is not None else ""
    out: list[Member] = []
    for e in entries:
        if e.problem is not None and e.problem[0] in ("UnsafeMemberName", "NotARegularFile"):
            out.append(Member(e.name.rpartition(".")[0] or e.name, e.base, None, None, *e.problem))
            continue
        kept = first[(e.stem, e.kind)]
        if kept is not e:
            out.append(
                Member(
                    e.stem,
                    e.base,
                    e.loc if e.kind == "video" else None,
                    None,
                    "DuplicateMember",
                    f"{shard}: {e.name!r} repeats the {e.kind} of video {e.stem!r} ({kept.name!r}); the first is used",
                )
            )
            continue
        if e.kind != "video":
            if e.stem in videos or not strict:
                continue  # attached to its video below; a stray masklet file in a folder is ignored
            error_type, message = e.problem or (
                "MissingVideo",
                f"{shard}: masklet file {e.name!r} has no video with the id {e.stem!r}{tail_note}",
            )
            out.append(Member(e.stem, e.base, None, e.loc, error_type, message))
            continue
        manual, auto = first.get((e.stem, "manual")), first.get((e.stem, "auto"))
        problem = e.problem
        for ann in (manual, auto):
            if problem is None and ann is not None and ann.problem is not None:
                problem = (ann.problem[0], f"masklet file {ann.name!r} of {e.name!r}: {ann.problem[1]}")
        extra = {"auto": auto.loc} if auto is not None and auto.loc is not None else {}
        member = Member(e.stem, e.base, e.loc, manual.loc if manual is not None else None, extra=extra)
        if problem is not None:
            member = Member(member.image_id, e.base, e.loc, member.annotation, *problem, extra=extra)
        out.append(member)
    return out


def index_video_shard(path: str | Path) -> ShardIndex:
    """Index a video tar (headers only) or a folder of videos; see the module docstring for the error entries."""
    p = Path(path)
    if p.is_dir():
        return _index_folder(p.resolve())
    if not p.is_file():
        raise FileNotFoundError(f"shard {str(path)!r} does not exist")
    return _index_tar(p.resolve(), split=split_video_name, pair=_pair_videos, related="a video or a masklet file")


def _index_folder(folder: Path) -> ShardIndex:
    entries: list[_Entry] = []
    total = 0
    mtime = folder.stat().st_mtime_ns
    for p in sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name):
        split = split_video_name(p.name)
        if split is None:
            continue
        st = p.stat()
        total += st.st_size
        mtime = max(mtime, st.st_mtime_ns)
        entries.append(_Entry(p.name, split[0], split[1], split[2], Locator(str(p), 0, int(st.st_size))))
    members = _pair_videos(entries, shard=folder.name, strict=False, tail=None)
    return ShardIndex(shard=folder.name, path=str(folder), kind="folder", size=total, mtime_ns=mtime, members=members)


VIDEO = InputKind(
    name="video",
    root_stage="videos",
    list_shards=list_video_shards,
    index_shard=index_video_shard,
    description="SA-V style video shards (video + <id>_manual.json / <id>_auto.json masklets) or folders of videos",
)
"""The ``video`` input kind (declared in the ``grand_engine.inputs`` entry-point group)."""


# -- decoding --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found: frame size, rate, frame count (decoded, or declared when not counted)."""

    width: int
    height: int
    fps: float
    num_frames: int
    codec: str

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def _open(data: bytes) -> Any:
    # PyAV is heavy (FFmpeg libraries): imported when a video is first opened
    import av

    if not data:
        raise NotAVideo("empty file (0 bytes), not a video")
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        if data[4:8] == b"ftyp":  # an ISO media file (MP4/MOV) whose index could not be read: cut before its end
            raise TruncatedVideo(
                f"the file starts like an MP4/MOV but its index cannot be read ({exc}); it looks truncated"
            ) from None
        raise NotAVideo(f"not a readable video container ({exc})") from None


def _video_stream(container: Any) -> Any:
    if not container.streams.video:
        raise NotAVideo("the container has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedCodec("this FFmpeg build has no decoder for the video stream's codec")
    stream.thread_type = "AUTO"
    return stream


def _decoded_frames(container: Any, stream: Any) -> Any:
    """Decoded frames of ``stream``; decoder failures become :class:`UnsupportedCodec` or :class:`TruncatedVideo`."""
    import av  # PyAV is heavy: imported when a video is first decoded

    codec = stream.codec_context
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.error.InvalidDataError as exc:
        raise TruncatedVideo(f"decoding stops on bad data after {count} frames ({exc})") from None
    except (av.error.DecoderNotFoundError, av.error.PatchWelcomeError) as exc:
        raise UnsupportedCodec(f"cannot decode the {codec.name} stream ({exc})") from None
    except av.error.FFmpegError as exc:
        raise TruncatedVideo(f"decoding fails after {count} frames ({exc})") from None


def _rate(stream: Any) -> float:
    for rate in (stream.average_rate, stream.base_rate, stream.guessed_rate):
        if rate:
            return float(rate)
    return 0.0


def probe_video(data: bytes, *, max_pixels: int = MAX_PIXELS_DEFAULT, count_frames: bool = True) -> VideoInfo:
    """The size, rate, codec and frame count of a video; see the module docstring for the errors.

    With ``count_frames`` every frame is decoded once (the corruption check); a container that declares more
    frames than decode is :class:`TruncatedVideo`. Without it the declared count is returned (0 when unknown).
    """
    container = _open(data)
    try:
        stream = _video_stream(container)
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise NotAVideo(f"the video stream has no frame size ({width}x{height})")
        if width * height > max_pixels:
            raise VideoTooLarge(f"{width}x{height} frames, more than max_pixels = {max_pixels}")
        declared = int(stream.frames or 0)
        codec = str(stream.codec_context.name)
        fps = _rate(stream)
        if not count_frames:
            return VideoInfo(width, height, fps, declared, codec)
        decoded = sum(1 for _ in _decoded_frames(container, stream))
    finally:
        container.close()
    if decoded == 0:
        raise TruncatedVideo("no frame decodes")
    if declared and decoded < declared:
        raise TruncatedVideo(f"only {decoded} of the {declared} frames the container declares decode")
    return VideoInfo(width, height, fps, decoded, codec)


def sample_indices(num_frames: int, fps: float, sample_fps: float, max_frames: int | None = None) -> list[int]:
    """The frames of a ``fps`` video of ``num_frames`` frames taken at ``sample_fps``: frame ``round(k * fps /
    sample_fps)`` for k = 0, 1, … (every frame when ``sample_fps >= fps`` or the rate is unknown), thinned evenly
    to ``max_frames`` when given. A 24 fps video at 6 fps gives 0, 4, 8, … (SA-V's annotated frames)."""
    if num_frames <= 0:
        return []
    if sample_fps <= 0:
        raise ValueError(f"sample_fps must be > 0, got {sample_fps}")
    if fps <= 0 or sample_fps >= fps:
        picked = list(range(num_frames))
    else:
        step = fps / sample_fps
        picked = sorted({round(k * step) for k in range(math.ceil(num_frames / step) + 1)} & set(range(num_frames)))
    if max_frames is not None and len(picked) > max_frames:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        keep = np.unique(np.round(np.linspace(0, len(picked) - 1, max_frames)).astype(int))
        picked = [picked[i] for i in keep]
    return picked


def decode_frames(data: bytes, indices: Sequence[int]) -> list[np.ndarray]:
    """Frames ``indices`` (ascending video frame numbers) as ``H×W×3`` uint8 RGB arrays, decoded in one pass.

    Raises :class:`TruncatedVideo` when the video ends before the last requested frame."""
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return []
    found: dict[int, np.ndarray] = {}
    wanted_set = set(wanted)
    container = _open(data)
    try:
        stream = _video_stream(container)
        for n, frame in enumerate(_decoded_frames(container, stream)):
            if n in wanted_set:
                found[n] = frame.to_ndarray(format="rgb24")
                if len(found) == len(wanted):
                    break
    finally:
        container.close()
    if len(found) < len(wanted):
        missing = [i for i in wanted if i not in found]
        raise TruncatedVideo(f"the video ends before frame {missing[0]} ({len(found)} of {len(wanted)} frames read)")
    return [found[int(i)] for i in indices]


FRAME_CACHE_ENV = "GRAND_FRAME_CACHE_MB"
FRAME_CACHE_MB_DEFAULT = 1024


class FrameCache:
    """Sampled frames of recently read videos, shared by the stages of one process (bounded by ``max_bytes``).

    Keyed by the video's locator and the frame numbers; least recently used entries go first. The arrays are
    read-only, so one stage cannot change the frames another sees. A budget of 0 disables the cache.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        if max_bytes is None:
            raw = os.environ.get(FRAME_CACHE_ENV, "").strip()
            try:
                max_bytes = int(float(raw) * 2**20) if raw else FRAME_CACHE_MB_DEFAULT * 2**20
            except ValueError:
                raise ValueError(f"{FRAME_CACHE_ENV} must be a number of MiB, got {raw!r}") from None
        self.max_bytes = max(0, int(max_bytes))
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[Any, ...], list[np.ndarray]] = OrderedDict()

    def frames(self, loc: Locator, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames ``indices`` of the video at ``loc`` (decoded on a miss)."""
        key = (loc.source, loc.offset, loc.size, tuple(int(i) for i in indices))
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
        frames = decode_frames(read_locator(loc), indices)
        size = sum(f.nbytes for f in frames)
        if size <= self.max_bytes:
            for f in frames:
                f.flags.writeable = False
            while self._entries and self.bytes + size > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self.bytes -= sum(f.nbytes for f in old)
            self._entries[key] = frames
            self.bytes += size
        return frames

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


_SHARED_CACHE: FrameCache | None = None


def shared_frame_cache() -> FrameCache:
    """The process-wide :class:`FrameCache` (budget from ``GRAND_FRAME_CACHE_MB``, default 1024 MiB)."""
    global _SHARED_CACHE
    if _SHARED_CACHE is None:
        _SHARED_CACHE = FrameCache()
    return _SHARED_CACHE


def video_locator(row: dict[str, Any], role: str = "video") -> Locator | None:
    """The locator of a ``videos`` row's video (``role="video"``) or masklet file (``"manual"``, ``"auto"``)."""
    prefix = {"video": "", "manual": "ann_", "auto": "auto_"}[role]
    source = row.get(f"{prefix}source")
    if source is None:
        return None
    return Locator(str(source), int(row[f"{prefix}offset"]), int(row[f"{prefix}size"]))


# -- masklets --------------------------------------------------------------------------------------------------


@dataclass
class Masklet:
    """One object's masks over the annotated frames (``None`` where a frame has no annotation)."""

    object_id: int
    source: str  # manual | auto | sam2
    masks: list[dict[str, Any] | None]  # table RLEs, one per annotated frame
    areas: list[int | None]  # mask area per annotated frame (0: not visible)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value != int(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def expected_annotated_frames(num_frames: int, stride: int) -> int:
    """Annotated frames of a video of ``num_frames`` frames annotated every ``stride``-th frame from frame 0."""
    return -(-int(num_frames) // int(stride))


def parse_masklets(
    raw: bytes | str,
    *,
    width: int,
    height: int,
    num_frames: int,
    stride: int = ANNOTATION_STRIDE_DEFAULT,
    role: str = "manual",
    source: str = "masklets",
) -> list[Masklet]:
    """Parse and check one SA-V masklet file against the decoded video (``width×height``, ``num_frames``).

    Returns one :class:`Masklet` per object in ``masklet_id`` order. Raises :class:`MalformedMasklets`,
    :class:`MaskletSizeMismatch` or :class:`MaskletFrameCountMismatch` naming ``source``, the object and the frame.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedMasklets(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedMasklets(f"{source}: the top level must be an object, got {type(doc).__name__}")
    frames, ids = doc.get("masklet"), doc.get("masklet_id")
    if not isinstance(frames, list) or not all(isinstance(f, list) for f in frames):
        raise MalformedMasklets(f"{source}: 'masklet' must be a list (frames) of lists (objects) of RLEs")
    if not isinstance(ids, list):
        raise MalformedMasklets(f"{source}: 'masklet_id' must be a list of object ids")
    try:
        object_ids = [_integer(v, "masklet_id") for v in ids]
        if "masklet_num" in doc and _integer(doc["masklet_num"], "masklet_num") != len(object_ids):
            raise ValueError(f"masklet_num is {doc['masklet_num']} but 'masklet_id' has {len(object_ids)} ids")
        declared_size = [doc.get("video_height"), doc.get("video_width")]
        if all(v is not None for v in declared_size):
            declared_size = [_integer(v, "video_height/video_width") for v in declared_size]
    except ValueError as exc:
        raise MalformedMasklets(f"{source}: {exc}") from None
    if len(set(object_ids)) != len(object_ids):
        raise MalformedMasklets(f"{source}: 'masklet_id' repeats an id ({object_ids})")
    if all(v is not None for v in declared_size) and declared_size != [int(height), int(width)]:
        raise MaskletSizeMismatch(
            f"{source}: the file describes {declared_size[1]}x{declared_size[0]} video but the video decodes to "
            f"{int(width)}x{int(height)} (W x H)"
        )
    expected = expected_annotated_frames(num_frames, stride)
    if len(frames) != expected:
        raise MaskletFrameCountMismatch(
            f"{source}: {len(frames)} annotated frames, but a video of {num_frames} frames annotated every "
            f"{stride} frames has {expected} (the masklets belong to another video, or the video is cut; "
            "set annotation_stride if the masklets use another stride)"
        )
    masklets = [Masklet(oid, role, [], []) for oid in object_ids]
    for k, objects in enumerate(frames):
        if len(objects) != len(object_ids):
            raise MalformedMasklets(
                f"{source}: annotated frame {k} has {len(objects)} masks for {len(object_ids)} objects"
            )
        for masklet, seg in zip(masklets, objects, strict=True):
            where = f"{source}: object {masklet.object_id}, annotated frame {k}"
            if seg is None:
                masklet.masks.append(None)
                masklet.areas.append(None)
                continue
            try:
                size = rle_lib.run_lengths(seg)  # validates structure, alphabet and that runs cover size
            except rle_lib.RLEError as exc:
                raise MalformedMasklets(f"{where}: {exc}") from None
            if [int(v) for v in seg["size"]] != [int(height), int(width)]:
                raise MaskletSizeMismatch(
                    f"{where}: mask size {list(seg['size'])} (H, W) differs from the video's [{int(height)}, "
                    f"{int(width)}]"
                )
            masklet.masks.append(_table_rle(seg))
            masklet.areas.append(int(size[1::2].sum()))
    return masklets


def _table_rle(seg: dict[str, Any]) -> dict[str, Any]:
    counts = seg["counts"]
    size = [int(seg["size"][0]), int(seg["size"][1])]
    if isinstance(counts, bytes):
        return {"size": size, "counts": counts.decode("ascii")}
    if isinstance(counts, str):
        return {"size": size, "counts": counts}
    return rle_lib.normalize(seg)


# -- writing ---------------------------------------------------------------------------------------------------


def encode_video(frames: Sequence[np.ndarray], fps: float = 24.0, codec: str = "libx264") -> bytes:
    """An MP4 (H.264 by default, yuv420p, the index at the front as ``faststart`` puts it, like downloaded
    videos) of ``H×W×3`` uint8 RGB frames of one even-sided size. Single-threaded, so the bytes are the same on
    every run of one FFmpeg build."""
    # PyAV is heavy (FFmpeg libraries): imported when a video is first written
    import tempfile
    from fractions import Fraction

    import av

    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError("a video needs at least one frame")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 in yuv420p needs even frame sides, got {width}x{height}")
    with tempfile.TemporaryDirectory() as tmp:  # faststart rewrites the file, which a memory buffer cannot do
        path = os.path.join(tmp, "video.mp4")
        with av.open(path, mode="w", options={"movflags": "faststart"}) as out:
            stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.thread_count = 1
            if codec == "libx264":
                stream.options = {"crf": "20", "preset": "medium"}
            for frame in frames:
                if frame.shape[:2] != (height, width):
                    raise ValueError(f"every frame must be {width}x{height}, got {frame.shape[1]}x{frame.shape[0]}")
                out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            out.mux(stream.encode())
        with open(path, "rb") as fh:
            return fh.read()
