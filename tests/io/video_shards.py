"""Builders of small video inputs for the video tests: flat-colour and moving-square clips, SA-V masklet files,
tar shards, and the ``videos`` rows and units the video stages read."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from grand_engine.demo_video import sav_masklets
from grand_engine.io.video import encode_video
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.video_input import VIDEOS_SCHEMA


def flat_frames(values: Sequence[int], width: int = 64, height: int = 48) -> list[np.ndarray]:
    """One grey frame per value (all three channels equal to it)."""
    return [np.full((height, width, 3), v, dtype=np.uint8) for v in values]


def square_frames(count: int, width: int = 64, height: int = 48, side: int = 16) -> list[np.ndarray]:
    """A white ``side``-pixel square moving 2 px right per frame over black, from x = 4, y = 8."""
    frames = []
    for k in range(count):
        f = np.zeros((height, width, 3), dtype=np.uint8)
        f[8 : 8 + side, 4 + 2 * k : 4 + 2 * k + side] = 255
        frames.append(f)
    return frames


def square_masks(count: int, width: int = 64, height: int = 48, side: int = 16) -> list[np.ndarray]:
    """The masks of :func:`square_frames`' square."""
    return [np.asarray(f[..., 0] > 127) for f in square_frames(count, width, height, side)]


def masklet_bytes(video_id: str, objects: Sequence[Sequence[np.ndarray]], num_frames: int, **kw: Any) -> bytes:
    return json.dumps(sav_masklets(video_id, objects, num_frames=num_frames, **kw)).encode()


def write_tar(path: Path, members: Sequence[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 24.0) -> bytes:
    data = encode_video(frames, fps)
    path.write_bytes(data)
    return data


def video_row(
    video_id: str,
    path: Path,
    *,
    width: int,
    height: int,
    num_frames: int,
    fps: float = 24.0,
    indices: Sequence[int] | None = None,
    sample_fps: float = 6.0,
    manual: Path | None = None,
    auto: Path | None = None,
) -> dict[str, Any]:
    """A ``videos`` row for a plain video file (and masklet files) on disk."""

    def loc(p: Path | None, prefix: str) -> dict[str, Any]:
        if p is None:
            return {f"{prefix}source": None, f"{prefix}offset": None, f"{prefix}size": None}
        size = p.stat().st_size if p.exists() else 0  # a path never read (a stage that decodes nothing) may be absent
        return {f"{prefix}source": str(p), f"{prefix}offset": 0, f"{prefix}size": size}

    return {
        "image_id": video_id,
        "file_name": path.name,
        "width": width,
        "height": height,
        "fps": fps,
        "num_frames": num_frames,
        "duration": num_frames / fps,
        "codec": "h264",
        **loc(path, ""),
        **loc(manual, "ann_"),
        **loc(auto, "auto_"),
        "sample_fps": sample_fps,
        "frame_indices": list(indices if indices is not None else range(0, num_frames, 4)),
    }


def video_unit(rows: Sequence[dict[str, Any]], inputs: dict[str, pa.Table] | None = None) -> UnitInput:
    """A unit of ``videos`` rows with upstream tables (rows in the same order)."""
    table = pa.Table.from_pylist(list(rows), schema=VIDEOS_SCHEMA)
    return UnitInput("test/00000", table, {"videos": table, **(inputs or {})})
