"""``video_masklets``: each video's SA-V masklets, checked against the video and selected for description.

1. **Read** the manual masklets (``<id>_manual.json``, when ``use_manual``) and the automatic ones
   (``<id>_auto.json``, when ``use_auto``) with :func:`grand_engine.io.video.parse_masklets`: every mask must have
   the video's frame size and the file must have ``ceil(num_frames / annotation_stride)`` annotated frames. A file
   that breaks this gives the video an error row (``MalformedMasklets``, ``MaskletSizeMismatch``,
   ``MaskletFrameCountMismatch``) — never a partial row. A video without masklet files gets a row with no objects
   (the ``video_tracks`` stage can create masklets for it).
2. **Align** each masklet with the sampled frames of the ``videos`` row: sampled video frame ``f`` takes
   annotated frame ``f / annotation_stride`` when ``f`` is a multiple of the stride, else null (no annotation).
3. **Select** the masklets worth describing: visible in at least ``min_visible_fraction`` of the annotated sampled
   frames, for at least ``min_duration`` seconds, with a mean visible area of at least ``min_mean_area`` pixels
   and at most ``max_visibility_changes`` appearances/disappearances after the first; then the ``max_objects``
   largest (mean area; ties by id). Rejected masklets are listed with their reason.

Object ids: the masklets in file order, manual first, numbered 0, 1, …; ``masklet_id`` keeps the file's own id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.io.sa1b import read_locator
from grand_engine.io.video import ANNOTATION_STRIDE_DEFAULT, Masklet, parse_masklets, video_locator
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import table_schema
from grand_engine.stages.video_common import VIDEO_OBJECT, masklet_stats

REJECTED = pa.struct(
    [("object_id", pa.int32()), ("masklet_id", pa.int32()), ("source", pa.string()), ("reason", pa.string())]
)

VIDEO_MASKLETS_SCHEMA = table_schema(
    ("objects", pa.list_(VIDEO_OBJECT)),  # the selected masklets, aligned with the sampled frames
    ("num_masklets", pa.int32()),  # masklets read (manual + auto as configured)
    ("rejected", pa.list_(REJECTED)),  # masklets left out and why
)
"""The ``video_masklets`` table."""

MAX_MASKLET_BYTES_DEFAULT = 256 << 20
"""Largest masklet file read (256 MiB); SA-V's auto files hold a few thousand RLEs, a few MB."""


@dataclass
class VideoMasklets(Stage):
    """Read, check, align and select each video's masklets."""

    name: ClassVar[str] = "video_masklets"
    requires: ClassVar[tuple[str, ...]] = ("videos",)
    level: ClassVar[int | None] = None
    schema: ClassVar[pa.Schema] = VIDEO_MASKLETS_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=8)

    use_manual: bool = True  # SA-V's human masklets (the objects Ref-SAV's expressions describe)
    use_auto: bool = False  # new: SA-V's automatic masklets are many and often parts or background; off by default
    annotation_stride: int = ANNOTATION_STRIDE_DEFAULT  # SA-V annotates every 4th frame (6 fps of 24 fps)
    min_mean_area: float = 1024.0  # SA-V's "small" bucket ends at 32² px; smaller objects give crops too small to read
    min_visible_fraction: float = 0.25  # new: an object hidden in most frames has no visible behaviour to describe
    min_duration: float = 1.0  # new: seconds from first to last visible frame; shorter gives no motion to describe
    max_visibility_changes: int = 10  # new: SA-V counts (dis)appearances; an object flickering more is mostly occluded
    max_objects: int = 10  # new: objects kept per video (largest first); bounds the VLM and LLM calls per video
    max_masklet_bytes: int = MAX_MASKLET_BYTES_DEFAULT  # larger masklet files are refused unread (memory guard)

    def __post_init__(self) -> None:
        if self.annotation_stride < 1:
            raise ValueError(f"annotation_stride must be >= 1, got {self.annotation_stride}")
        if self.max_objects < 0:
            raise ValueError(f"max_objects must be >= 0, got {self.max_objects}")

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = unit.image_row(image_id)
        masklets: list[Masklet] = []
        for role, wanted in (("manual", self.use_manual), ("auto", self.use_auto)):
            loc = video_locator(row, role)
            if not wanted or loc is None:
                continue
            if loc.size > self.max_masklet_bytes:
                raise ValueError(
                    f"{image_id} {role} masklets: {loc.size} bytes, more than max_masklet_bytes = "
                    f"{self.max_masklet_bytes} (refused unread)"
                )
            masklets += parse_masklets(
                read_locator(loc),
                width=int(row["width"]),
                height=int(row["height"]),
                num_frames=int(row["num_frames"]),
                stride=self.annotation_stride,
                role=role,
                source=f"{image_id}_{role}.json",
            )
        indices = [int(i) for i in row["frame_indices"]]
        rate = float(row["sample_fps"])
        candidates: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for object_id, masklet in enumerate(masklets):
            obj = self.aligned(object_id, masklet, indices, rate)
            reason = self.rejection(obj)
            if reason:
                rejected.append({k: obj[k] for k in ("object_id", "masklet_id", "source")} | {"reason": reason})
            else:
                candidates.append(obj)
        candidates.sort(key=lambda o: (-o["mean_area"], o["object_id"]))
        for obj in candidates[self.max_objects :]:
            reason = f"more than max_objects = {self.max_objects} larger objects"
            rejected.append({k: obj[k] for k in ("object_id", "masklet_id", "source")} | {"reason": reason})
        kept = sorted(candidates[: self.max_objects], key=lambda o: o["object_id"])
        return {
            "image_id": image_id,
            "objects": kept,
            "num_masklets": len(masklets),
            "rejected": sorted(rejected, key=lambda r: r["object_id"]),
        }

    def aligned(self, object_id: int, masklet: Masklet, indices: list[int], rate: float) -> dict[str, Any]:
        """The :data:`VIDEO_OBJECT` of one masklet over the sampled frames (step 2) with its statistics."""
        masks: list[dict[str, Any] | None] = []
        areas: list[int | None] = []
        for frame in indices:
            k, off = divmod(frame, self.annotation_stride)
            has = off == 0 and k < len(masklet.masks)
            masks.append(masklet.masks[k] if has else None)
            areas.append(masklet.areas[k] if has else None)
        return {
            "object_id": object_id,
            "masklet_id": masklet.object_id,
            "source": masklet.source,
            "masks": masks,
            "areas": areas,
            **masklet_stats(areas, rate),
            "propagated": 0,
        }

    def rejection(self, obj: dict[str, Any]) -> str | None:
        """Why ``obj`` is left out (step 3), or None when it is kept."""
        if obj["visible_fraction"] == 0:
            return "never visible in the sampled frames"
        if obj["visible_fraction"] < self.min_visible_fraction:
            return f"visible in {obj['visible_fraction']:.0%} of the frames, under min_visible_fraction"
        if obj["duration"] < self.min_duration:
            return f"visible for {obj['duration']:.2f} s, under min_duration = {self.min_duration} s"
        if obj["mean_area"] < self.min_mean_area:
            return f"mean area {obj['mean_area']:.0f} px, under min_mean_area = {self.min_mean_area:.0f}"
        if obj["visibility_changes"] > self.max_visibility_changes:
            return f"{obj['visibility_changes']} visibility changes, over max_visibility_changes"
        return None
