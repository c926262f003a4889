"""What the video stages share: the per-object masklet struct, frame access, key frames and the highlighted views.

**Masklets in tables.** A video row holds a list of objects (:data:`VIDEO_OBJECT`); an object's ``masks`` has one
entry per sampled frame of the ``videos`` row (``frame_indices``), a COCO RLE, or null where the frame has no
annotation (SA-V annotates every 4th frame; a video sampled more densely has frames in between). An empty mask
(area 0) means the object is not visible in that frame.

**Views of an object** (Ref-SAV's data engine, Sa2VA (Yuan et al., 2025, arXiv:2501.04001), section 3.3 and Figure 3): the object is shown to the VLMs
outlined in red on the frame — cropped around it with some context for the object-level description
(:func:`object_crop`), the whole frame for the scene-level one and a sequence of whole frames for the video-level
one (:func:`highlight`). The outline is the mask's border, thickened to ``outline_width`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from grand_engine.io import rle
from grand_engine.io.video import shared_frame_cache, video_locator
from grand_engine.runtime.stage import UnitInput
from grand_engine.schema import RLE

VIDEO_OBJECT = pa.struct(
    [
        ("object_id", pa.int32()),  # unique within the video
        ("masklet_id", pa.int32()),  # the id in the masklet file (null for masklets SAM 2 created)
        ("source", pa.string()),  # manual | auto | sam2
        ("masks", pa.list_(RLE)),  # one per sampled frame of the videos row; null where the frame has no annotation
        ("areas", pa.list_(pa.int32())),  # mask area per sampled frame (0: not visible; null: no annotation)
        ("visible_fraction", pa.float32()),  # annotated sampled frames where the object is visible / annotated ones
        ("mean_area", pa.float32()),  # mean area (pixels) over the frames where it is visible
        ("duration", pa.float32()),  # seconds from its first to its last visible sampled frame (one frame: 1 / rate)
        ("visibility_changes", pa.int32()),  # visible <-> not visible switches after its first appearance
        ("propagated", pa.int32()),  # masks SAM 2 filled in (0 in video_masklets)
    ]
)
"""One object of a video with its masklet over the sampled frames."""

OUTLINE_RGB = (255, 0, 0)
"""The outline colour the prompts name ("outlined in red")."""


# -- rows and frames -----------------------------------------------------------------------------------------


def frames_of(unit: UnitInput, video_id: str, positions: Sequence[int] | None = None) -> list[np.ndarray]:
    """Sampled frames of a video (all, or those at ``positions`` in its ``frame_indices``), from the shared cache."""
    row = unit.image_row(video_id)
    indices = list(row["frame_indices"])
    loc = video_locator(row)
    if loc is None:
        raise ValueError(f"video {video_id!r} has no source")
    frames = shared_frame_cache().frames(loc, indices)
    return frames if positions is None else [frames[p] for p in positions]


def objects_of(unit: UnitInput, stage: str, video_id: str) -> list[dict[str, Any]]:
    """The objects of ``video_id`` in the table of ``stage`` (a :data:`VIDEO_OBJECT` list column ``objects``)."""
    return list(unit.input_row(stage, video_id).get("objects") or [])


def by_object(unit: UnitInput, stage: str, video_id: str) -> dict[int, dict[str, Any]]:
    """:func:`objects_of` keyed by ``object_id``."""
    return {int(o["object_id"]): o for o in objects_of(unit, stage, video_id)}


# -- masklet statistics --------------------------------------------------------------------------------------


def masklet_stats(areas: Sequence[int | None], rate: float) -> dict[str, float | int]:
    """``visible_fraction``, ``mean_area``, ``duration`` and ``visibility_changes`` of per-frame areas (``None``:
    no annotation) sampled at ``rate`` frames per second."""
    known = [(i, a) for i, a in enumerate(areas) if a is not None]
    visible = [(i, a) for i, a in known if a > 0]
    if not visible:
        return {"visible_fraction": 0.0, "mean_area": 0.0, "duration": 0.0, "visibility_changes": 0}
    states = [a > 0 for _, a in known]
    first = states.index(True)
    changes = sum(1 for x, y in zip(states[first:], states[first + 1 :], strict=False) if x != y)
    span = visible[-1][0] - visible[0][0] + 1
    return {
        "visible_fraction": len(visible) / len(known),
        "mean_area": float(np.mean([a for _, a in visible])),
        "duration": span / rate if rate > 0 else 0.0,
        "visibility_changes": changes,
    }


def key_positions(areas: Sequence[int | None], count: int) -> list[int]:
    """Up to ``count`` sampled-frame positions to show an object at: the frame where its mask is largest first,
    then frames spread evenly over the frames where it is visible (ascending after the first)."""
    visible = [i for i, a in enumerate(areas) if a]
    if not visible or count < 1:
        return []
    best = max(visible, key=lambda i: (areas[i], -i))
    if count == 1:
        return [best]
    spread = [visible[int(k)] for k in np.round(np.linspace(0, len(visible) - 1, count)).astype(int)]
    rest = [i for i in dict.fromkeys(spread) if i != best]
    return [best, *rest[: count - 1]]


def uniform_positions(areas: Sequence[int | None], count: int) -> list[int]:
    """``count`` positions spread evenly from the object's first to its last visible frame (Ref-SAV's video-level
    frames), ascending; fewer when the span is shorter."""
    visible = [i for i, a in enumerate(areas) if a]
    if not visible or count < 1:
        return []
    first, last = visible[0], visible[-1]
    return sorted({int(p) for p in np.round(np.linspace(first, last, count)).astype(int)})


# -- views ---------------------------------------------------------------------------------------------------


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The border pixels of ``mask`` thickened to about ``width`` pixels (inside and outside the border)."""
    from scipy import ndimage  # deferred: scipy's image module is only needed when a view is drawn

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    inner = ndimage.binary_erosion(mask, iterations=1, border_value=0)
    edge = mask & ~inner
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=max(1, width // 2))
    return edge


def highlight(frame: np.ndarray, mask: np.ndarray, width: int = 3) -> np.ndarray:
    """``frame`` with ``mask``'s outline drawn in :data:`OUTLINE_RGB`, ``width`` pixels wide (a new array)."""
    out = np.array(frame, dtype=np.uint8, copy=True)
    out[_outline(mask, width)] = OUTLINE_RGB
    return out


def mask_of(obj: dict[str, Any], position: int) -> np.ndarray:
    """The decoded mask of ``obj`` at a sampled-frame position (``ValueError`` when that frame has none)."""
    seg = obj["masks"][position]
    if seg is None:
        raise ValueError(f"object {obj['object_id']} has no mask at sampled frame {position}")
    return np.asarray(rle.decode(seg), dtype=bool)


def object_crop(frame: np.ndarray, mask: np.ndarray, context: float = 0.2, width: int = 3) -> np.ndarray:
    """The highlighted frame cropped to the mask's box grown by ``context`` × its size on each side (clipped to the
    frame; at least 16 pixels a side where the frame allows)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("the mask is empty; there is no object to crop")
    height, frame_w = mask.shape
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    grow_x = max(context * (x2 - x1), (16 - (x2 - x1)) / 2, 0)
    grow_y = max(context * (y2 - y1), (16 - (y2 - y1)) / 2, 0)
    left, right = int(max(0, np.floor(x1 - grow_x))), int(min(frame_w, np.ceil(x2 + grow_x)))
    top, bottom = int(max(0, np.floor(y1 - grow_y))), int(min(height, np.ceil(y2 + grow_y)))
    return highlight(frame, mask, width)[top:bottom, left:right]


def side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
    """Images scaled to the height of the first and joined left to right, 4 white pixels apart."""
    from PIL import Image  # deferred: only composite views need resizing

    if len(images) == 1:
        return images[0]
    height = images[0].shape[0]
    parts = []
    for im in images:
        if im.shape[0] != height:
            w = max(1, round(im.shape[1] * height / im.shape[0]))
            im = np.asarray(Image.fromarray(im).resize((w, height), Image.Resampling.BILINEAR))
        parts += [im, np.full((height, 4, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)
