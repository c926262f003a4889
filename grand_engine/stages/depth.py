"""``depth``: relative inverse depth per image (GranD step 2), stored compactly and exactly.

The ``depth`` slot (MiDaS v3.1 ``dpt_beit_large_512`` in the reference; its HF port by default) predicts relative
inverse depth — **bigger = nearer**. The map is resized (bicubic, aspect ratio kept) so that its long side is
``long_side`` pixels (512); an image whose long side is already shorter keeps its own size (no upsampling).

Storage (deviation from the reference, which wrote a min-max normalised 8-bit **JPEG** — lossy, §14.44 — with
min/max in the file name):

* ``depth`` — binary, little-endian IEEE float16, row-major ``depth_height × depth_width``, holding the map
  min-max normalised to ``[0, 1]``: ``u = (d - min) / (max - min)`` (all zeros when ``max == min``).
  Normalising first makes float16 safe for any model's output range (a random or badly scaled model may
  produce values below float16's subnormal range or above 65504) while keeping ~11 bits of relative precision.
* ``min`` / ``max`` — float32, the map's minimum and maximum before normalisation; ``d = u · (max - min) + min``.
* ``scale`` — float32, image pixels per depth pixel (``max(H, W) / max(depth_height, depth_width)``): image
  point ``(x, y)`` reads depth pixel ``(row, col) = (floor(y / scale), floor(x / scale))`` (clamped).

:func:`decode_depth` turns a row back into the float32 map; :class:`DepthField` samples it at image coordinates
(median inside a box or a mask) for the level-2 ``object_depth`` stage. A map with a non-finite value is an error
row for that image (the reference wrote ``NaN`` into JSON, §14.31).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema

DEPTH_SCHEMA = table_schema(
    ("depth", pa.binary()),
    ("depth_height", pa.int32()),
    ("depth_width", pa.int32()),
    ("scale", pa.float32()),
    ("min", pa.float32()),
    ("max", pa.float32()),
    version="1",
)
"""The ``depth`` table (see the module docstring for the encoding)."""

_F16 = np.dtype("<f2")


class DepthDecodeError(ValueError):
    """A ``depth`` row whose fields do not describe a valid map."""


def encode_depth(depth: np.ndarray, scale: float) -> dict[str, Any]:
    """The ``depth`` row fields (without ``image_id``) for a float map at ``scale`` image pixels per pixel."""
    arr = np.asarray(depth, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"a depth map must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"depth map has {bad} non-finite value(s) of {arr.size}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"depth scale must be a positive number, got {scale!r}")
    lo, hi = float(arr.min()), float(arr.max())
    span = hi - lo
    unit = (arr - lo) / span if span > 0 else np.zeros_like(arr)
    return {
        "depth": np.ascontiguousarray(unit, dtype=_F16).tobytes(),
        "depth_height": int(arr.shape[0]),
        "depth_width": int(arr.shape[1]),
        "scale": float(scale),
        "min": lo,
        "max": hi,
    }


def decode_depth(row: Mapping[str, Any]) -> np.ndarray:
    """The ``(depth_height, depth_width)`` float32 relative inverse depth of a ``depth`` row."""
    data, h, w = row.get("depth"), row.get("depth_height"), row.get("depth_width")
    lo, hi = row.get("min"), row.get("max")
    if data is None or h is None or w is None or lo is None or hi is None:
        raise DepthDecodeError("depth row lacks one of depth, depth_height, depth_width, min, max")
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise DepthDecodeError(f"depth row has an empty size {h}×{w}")
    if len(data) != h * w * _F16.itemsize:
        raise DepthDecodeError(
            f"depth row has {len(data)} bytes, expected {h * w * _F16.itemsize} for {h}×{w} float16"
        )
    if not (math.isfinite(lo) and math.isfinite(hi) and hi >= lo):
        raise DepthDecodeError(f"depth row has an invalid range min={lo!r} max={hi!r}")
    unit = np.frombuffer(data, dtype=_F16).reshape(h, w).astype(np.float32)
    return (unit * np.float32(hi - lo) + np.float32(lo)).astype(np.float32)


@dataclass
class DepthField:
    """A decoded depth map with its image-pixel scale, sampled at image coordinates."""

    depth: np.ndarray  # (h, w) float32
    scale: float  # image pixels per depth pixel

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DepthField:
        scale = row.get("scale")
        if scale is None or not math.isfinite(scale) or scale <= 0:
            raise DepthDecodeError(f"depth row has an invalid scale {scale!r}")
        return cls(decode_depth(row), float(scale))

    @property
    def image_size(self) -> tuple[float, float]:
        """The ``(height, width)`` of the image the map covers, in image pixels (approximate to one depth pixel)."""
        return self.depth.shape[0] * self.scale, self.depth.shape[1] * self.scale

    def _index(self, coords: np.ndarray, axis: int) -> np.ndarray:
        size = self.depth.shape[axis]
        return np.clip(np.floor(coords / self.scale), 0, size - 1).astype(np.int64)

    def median_in_box(self, box: Sequence[float]) -> float | None:
        """Median depth over the depth pixels a xyxy image-pixel ``box`` covers; ``None`` for a box with no area
        inside the image or non-finite corners. Every depth pixel the box touches counts (at least one)."""
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            return None
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        h, w = self.depth.shape
        height, width = self.image_size
        x1, x2 = max(x1, 0.0), min(x2, width)
        y1, y2 = max(y1, 0.0), min(y2, height)
        if x2 <= x1 or y2 <= y1:
            return None
        c1, r1 = int(x1 // self.scale), int(y1 // self.scale)
        c2, r2 = math.ceil(x2 / self.scale), math.ceil(y2 / self.scale)
        c1, r1 = min(c1, w - 1), min(r1, h - 1)
        c2, r2 = max(min(c2, w), c1 + 1), max(min(r2, h), r1 + 1)
        return float(np.median(self.depth[r1:r2, c1:c2]))

    def median_in_mask(self, rle: Mapping[str, Any]) -> float | None:
        """Median depth over the mask's image pixels (each image pixel reads the depth pixel it falls in, so a
        thin object is weighted by its own pixels, not its box); ``None`` for an empty mask.

        The mask's ``size`` must be the image's: it has to agree with the map's size at ``scale`` to within one
        depth pixel, else ``ValueError``.
        """
        from grand_engine.io import rle as rle_lib

        mask = rle_lib.decode(rle)
        mh, mw = mask.shape
        h, w = self.depth.shape
        if abs(mh / self.scale - h) > 1 or abs(mw / self.scale - w) > 1:
            raise ValueError(
                f"mask of size {mh}×{mw} does not match the depth map ({h}×{w} at {self.scale:g} image px per pixel)"
            )
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return None
        values = self.depth[self._index(ys.astype(np.float64), 0), self._index(xs.astype(np.float64), 1)]
        return float(np.median(values))


@dataclass
class DepthStage(Stage):
    """Relative inverse depth (bigger = nearer) per image, float16 at a reduced resolution (step 2)."""

    name: ClassVar[str] = "depth"
    requires: ClassVar[tuple[str, ...]] = ("images",)
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = DEPTH_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("depth",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=8)

    long_side: int = 512  # stored map's long side; step 2 predicted at 512×512 and stored at full size as JPEG

    model: Any = collaborator()  # the depth adapter; loaded from the `depth` slot when None

    def __post_init__(self) -> None:
        if isinstance(self.long_side, bool) or not isinstance(self.long_side, int) or self.long_side < 1:
            raise ValueError(f"depth: long_side must be a positive integer, got {self.long_side!r}")

    def setup(self) -> None:
        if self.model is None:
            self.model = self.load_model("depth")

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids``; images are grouped by stored long side (never above the image's own)."""
        images = [unit.pixels(i) for i in image_ids]
        groups: dict[int, list[int]] = defaultdict(list)
        for k, image in enumerate(images):
            groups[min(self.long_side, max(image.shape[:2]))].append(k)
        rows: list[dict[str, Any] | None] = [None] * len(images)
        for side, members in groups.items():
            maps = self.model.predict([images[k] for k in members], long_side=side)
            for k, dmap in zip(members, maps, strict=True):
                try:
                    rows[k] = {"image_id": image_ids[k], **encode_depth(dmap.depth, dmap.scale)}
                except ValueError as exc:
                    raise ValueError(f"image {image_ids[k]!r}: {exc}") from None
        return rows  # type: ignore[return-value]
