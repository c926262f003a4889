"""Builders for synthetic SA-1B shards and images, written into pytest tmp dirs by the tests."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from grand_engine.io import rle


@dataclass(frozen=True)
class Link:
    """A symlink member ``name -> target`` (hard link when ``hard``)."""

    name: str
    target: str
    hard: bool = False


def image_bytes(
    width: int = 16, height: int = 12, color: tuple[int, int, int] = (200, 30, 60), fmt: str = "JPEG"
) -> bytes:
    """A small solid-colour image."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format=fmt)
    return buf.getvalue()


def sa1b_json(
    image_id: int,
    width: int,
    height: int,
    masks: Sequence[np.ndarray] = (),
    *,
    file_name: str | None = None,
) -> dict:
    """An SA-1B per-image annotation dict for the given masks (each ``height×width`` bool)."""
    anns = []
    for k, m in enumerate(masks):
        r = rle.encode(m)
        x1, y1, x2, y2 = rle.to_bbox_xyxy(r)[0].tolist()
        ys, xs = np.nonzero(m)
        anns.append(
            {
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": int(m.sum()),
                "segmentation": r,
                "predicted_iou": 0.9,
                "point_coords": [[float(xs[0]), float(ys[0])]],
                "crop_box": [0.0, 0.0, float(width), float(height)],
                "id": 1000 * image_id + k,
                "stability_score": 0.95,
            }
        )
    return {
        "image": {
            "image_id": image_id,
            "width": width,
            "height": height,
            "file_name": file_name or f"sa_{image_id}.jpg",
        },
        "annotations": anns,
    }


def box_mask(height: int, width: int, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def write_tar(path: Path, members: Iterable[tuple[str, bytes] | Link | str]) -> Path:
    """Write a plain tar; a ``str`` member is a directory, a :class:`Link` a link, else ``(name, data)``.

    Names are written verbatim (``../x`` and ``/x`` included): only the bytes of the tar are produced,
    nothing is written at those paths.
    """
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for m in members:
            if isinstance(m, str):
                info = tarfile.TarInfo(m)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            elif isinstance(m, Link):
                info = tarfile.TarInfo(m.name)
                info.type = tarfile.LNKTYPE if m.hard else tarfile.SYMTYPE
                info.linkname = m.target
                tf.addfile(info)
            else:
                name, data = m
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 1_700_000_000
                tf.addfile(info, io.BytesIO(data))
    return path


def member_offsets(path: Path) -> dict[str, tuple[int, int, int]]:
    """``name -> (header offset, data offset, size)`` as tarfile reads them (for cutting files)."""
    with tarfile.open(path, "r:") as tf:
        return {m.name: (m.offset, m.offset_data, m.size) for m in tf.getmembers()}


def truncate(path: Path, length: int) -> Path:
    with open(path, "r+b") as f:
        f.truncate(length)
    return path


def simple_shard(path: Path, n: int = 3, width: int = 16, height: int = 12) -> tuple[Path, dict[str, bytes]]:
    """``sa_1 … sa_n`` image+JSON pairs; returns the tar and the member bytes by name."""
    payload: dict[str, bytes] = {}
    members = []
    for i in range(1, n + 1):
        img = image_bytes(width, height, color=(10 * i, 20, 30))
        ann = json.dumps(sa1b_json(i, width, height, [box_mask(height, width, 1, 5, 2, 9)])).encode()
        members += [(f"sa_{i}.jpg", img), (f"sa_{i}.json", ann)]
        payload[f"sa_{i}.jpg"] = img
        payload[f"sa_{i}.json"] = ann
    return write_tar(path, members), payload


def listing(root: Path) -> set[str]:
    """Every path under ``root`` (recursive), relative, for before/after comparisons."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
