"""A small SA-V style video shard built from photographs shipped inside scikit-image.

``build_video_demo_shard(DIR)`` writes ``DIR/sav_000000.tar`` laid out like an SA-V training shard
(``sav_<n>.mp4`` with ``sav_<n>_manual.json`` and ``sav_<n>_auto.json`` masklets), so the video pipeline can be
tried offline (``grand-engine run --input video``):

* ``sav_000001`` — a virtual camera over the cat photo (``chelsea``): it pans left to right for the first half of
  the clip, then zooms in towards the cat. The manual masklet follows the cat: its mask in the photo (the largest
  region of a classical Felzenszwalb segmentation that holds the photo's centre, **not** a human or SAM mask) moved
  through the same camera path. The auto file holds that masklet and one of a background region.
* ``sav_000002`` — a pan over the coffee photo with no masklet files: the ``video_tracks`` stage creates masklets.
* Deliberately broken entries, so a run shows error rows: ``sav_000003.mp4`` is cut to 60 % of its bytes
  (``TruncatedVideo``); ``sav_000004``'s manual masklets have one annotated frame too many
  (``MaskletFrameCountMismatch``); ``sav_000005_manual.json`` has no video (``MissingVideo``); ``README.txt`` is
  an unrelated member the reader ignores.

Videos are H.264 MP4 at 24 fps annotated every 4th frame, as SA-V's. The bytes are deterministic for a given
FFmpeg (PyAV) and scikit-image version. Photo licences: see :mod:`grand_engine.demo` (``chelsea``: CC0 by Stefan
van der Walt; ``coffee``: CC0 by Rachel Michetti).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.demo import DEMO_MTIME, _regions
from grand_engine.io import rle
from grand_engine.io.video import ANNOTATION_STRIDE_DEFAULT, encode_video

__all__ = ["build_video_demo_shard", "camera_path", "render_clip", "sav_masklets"]

FPS = 24.0
Box = tuple[float, float, float, float]


def camera_path(photo_w: int, photo_h: int, aspect: float, frames: int, target: tuple[float, float]) -> list[Box]:
    """Crop windows ``(x0, y0, x1, y1)`` of a pan then a zoom: the first half of the frames pans a window of
    ``aspect`` (width / height) and three quarters of the largest such window's size from the left edge to the
    right, the second half shrinks the window to half its size while moving its centre to ``target``."""
    win_h = 0.75 * min(photo_h, photo_w / aspect)
    win_w = win_h * aspect
    pan = frames // 2
    boxes: list[Box] = []
    y0 = (photo_h - win_h) / 2
    for k in range(pan):
        x0 = (photo_w - win_w) * k / max(1, pan - 1)
        boxes.append((x0, y0, x0 + win_w, y0 + win_h))
    start_cx, start_cy = (boxes[-1][0] + boxes[-1][2]) / 2 if boxes else photo_w / 2, photo_h / 2
    for k in range(frames - pan):
        t = (k + 1) / max(1, frames - pan)
        w, h = win_w * (1 - 0.5 * t), win_h * (1 - 0.5 * t)
        cx = start_cx + (target[0] - start_cx) * t
        cy = start_cy + (target[1] - start_cy) * t
        cx = min(max(cx, w / 2), photo_w - w / 2)
        cy = min(max(cy, h / 2), photo_h - h / 2)
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes


def render_clip(photo: np.ndarray, boxes: Sequence[Box], size: tuple[int, int]) -> list[np.ndarray]:
    """The photo seen through each window, resized to ``size`` (width, height): bilinear for pictures, nearest
    neighbour for masks (a 2-D bool array gives bool frames)."""
    from PIL import Image

    is_mask = photo.ndim == 2
    source = Image.fromarray(photo.astype(np.uint8) * 255 if is_mask else photo)
    resample = Image.Resampling.NEAREST if is_mask else Image.Resampling.BILINEAR
    out = []
    for box in boxes:
        view = np.asarray(source.transform(size, Image.Transform.EXTENT, data=box, resample=resample))
        out.append(view > 127 if is_mask else view)
    return out


def sav_masklets(
    video_id: str,
    objects: Sequence[Sequence[np.ndarray]],
    *,
    num_frames: int,
    fps: float = FPS,
    kind: str = "manual",
    stride: int = ANNOTATION_STRIDE_DEFAULT,
) -> dict[str, Any]:
    """An SA-V masklet file (``sav_dataset/README.md`` keys) for ``objects``: each a list of per-video-frame bool
    masks, annotated every ``stride``-th frame."""
    height, width = objects[0][0].shape if objects else (0, 0)
    annotated = list(range(0, num_frames, stride))
    per_frame = [[rle.encode(obj[f]) for obj in objects] for f in annotated]
    sizes = []
    for obj in objects:
        areas = [int(obj[f].sum()) for f in annotated]
        visible = [a for a in areas if a > 0]
        sizes.append(float(np.mean(visible)) if visible else 0.0)
    changes, first = [], []
    for obj in objects:
        states = [bool(obj[f].any()) for f in annotated]
        on = states.index(True) if True in states else 0
        first.append(on)
        changes.append(sum(1 for a, b in zip(states[on:], states[on + 1 :], strict=False) if a != b))
    return {
        "video_id": video_id,
        "video_duration": num_frames / fps,
        "video_frame_count": float(num_frames),
        "video_height": float(height),
        "video_width": float(width),
        "video_resolution": float(height * width),
        "video_environment": "Indoor",
        "video_split": "train",
        "masklet": per_frame,
        "masklet_id": list(range(len(objects))),
        "masklet_size_rel": [s / (height * width) for s in sizes],
        "masklet_size_abs": sizes,
        "masklet_size_bucket": ["small" if s < 32**2 else "medium" if s < 96**2 else "large" for s in sizes],
        "masklet_visibility_changes": changes,
        "masklet_first_appeared_frame": [float(f) for f in first],
        "masklet_frame_count": [len(annotated)] * len(objects),
        "masklet_edited_frame_count": [0] * len(objects),
        "masklet_type": [kind] * len(objects),
        "masklet_stability_score": [None] * len(objects),
        "masklet_num": len(objects),
    }


def _object_mask(photo: np.ndarray) -> np.ndarray:
    """The Felzenszwalb region holding the photo's centre (the largest region when none does)."""
    regions = _regions(photo)
    h, w = photo.shape[:2]
    return next((r for r in regions if r[h // 2, w // 2]), regions[0])


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = DEMO_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


def build_video_demo_shard(dest: str | Path, width: int = 320, height: int = 240, num_frames: int = 48) -> Path:
    """Write ``dest/sav_000000.tar`` (see the module docstring) and return its path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    size = (width, height)
    cat = _photo("chelsea")
    cat_mask = _object_mask(cat)
    background = next(r for r in _regions(cat) if not (r & cat_mask).any())
    ys, xs = np.nonzero(cat_mask)
    boxes = camera_path(cat.shape[1], cat.shape[0], width / height, num_frames, (float(xs.mean()), float(ys.mean())))
    cat_video = encode_video(render_clip(cat, boxes, size), FPS)
    cat_masks = render_clip(cat_mask, boxes, size)
    back_masks = render_clip(background, boxes, size)

    coffee = _photo("coffee")
    pan = camera_path(coffee.shape[1], coffee.shape[0], width / height, 2 * (num_frames // 2), (0.0, 0.0))
    coffee_video = encode_video(render_clip(coffee, pan[: num_frames // 2], size), FPS)

    short = num_frames // 2
    short_boxes = boxes[:short]
    short_video = encode_video(render_clip(cat, short_boxes, size), FPS)
    wrong = sav_masklets("sav_000004", [render_clip(cat_mask, short_boxes, size)], num_frames=short)
    wrong["masklet"].append(wrong["masklet"][-1])  # one annotated frame more than the video has

    members = [
        ("README.txt", b"A demo SA-V style shard built by grand_engine.demo_video; see that module.\n"),
        ("sav_000001.mp4", cat_video),
        ("sav_000001_manual.json", _json(sav_masklets("sav_000001", [cat_masks], num_frames=num_frames))),
        (
            "sav_000001_auto.json",
            _json(sav_masklets("sav_000001", [cat_masks, back_masks], num_frames=num_frames, kind="auto")),
        ),
        ("sav_000002.mp4", coffee_video),
        ("sav_000003.mp4", cat_video[: int(len(cat_video) * 0.6)]),
        ("sav_000003_manual.json", _json(sav_masklets("sav_000003", [cat_masks], num_frames=num_frames))),
        ("sav_000004.mp4", short_video),
        ("sav_000004_manual.json", _json(wrong)),
        ("sav_000005_manual.json", _json(sav_masklets("sav_000005", [cat_masks], num_frames=num_frames))),
    ]
    path = dest / "sav_000000.tar"
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in members:
            _add(tar, name, payload)
    tmp.replace(path)
    return path


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grand_engine.demo_video [DIR]``: write the demo shard into DIR (default ``demo_video/shards``)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    path = build_video_demo_shard(args[0] if args else "demo_video/shards")
    print(f"built the demo video shard {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
