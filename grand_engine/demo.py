"""A small SA-1B-format sample shard built from photographs shipped inside scikit-image.

``build_demo_shard(DIR)`` writes ``DIR/sa_000000.tar`` laid out like a real SA-1B shard
(``sa_<n>.jpg`` + ``sa_<n>.json`` pairs), so the whole pipeline can be tried offline:

* ``sa_1`` … ``sa_5`` — good images: astronaut, cat (``chelsea``), coffee cup, rocket launch,
  motorcycle (left view of the stereo pair), each downscaled to a long side of at most 640 px and
  saved as JPEG quality 90. Their masks are **not from SAM**: they are the 10–40 largest regions
  of a classical Felzenszwalb graph segmentation, stored as COCO compressed RLE exactly like SA-1B's
  (XYWH ``bbox``, ``area``, ``point_coords``, XYWH ``crop_box``). ``predicted_iou`` and
  ``stability_score`` are deterministic placeholders; every JSON says so in ``mask_source``.
* Deliberately broken entries, so a run shows error rows:
  ``sa_6`` — a JPEG with a valid header whose data is cut in half (plus its JSON);
  ``sa_7`` — a good image whose JSON has one mask RLE of a different size than the image;
  ``sa_8`` — an image without its JSON;
  ``README.txt`` — an unrelated member the reader ignores.

The bytes are deterministic for a given Pillow/libjpeg and scikit-image version (fixed member
order, mtimes, owners and modes).

Image licences, quoted from the docstrings of the ``skimage.data`` functions (scikit-image ships
the files in ``skimage/data/``; the ``README.txt`` there in the installed package only explains how
to download more data, so the per-image notes are taken from those docstrings; scikit-image itself
is BSD-3-Clause):

* ``astronaut`` — Eileen Collins, NASA Great Images database; "No known copyright restrictions,
  released into the public domain".
* ``chelsea`` — Chelsea the cat, "No copyright restrictions. CC0 by the photographer (Stefan van der
  Walt)".
* ``coffee`` — coffee cup, courtesy of Pikolo Espresso Bar; "No copyright restrictions. CC0 by the
  photographer (Rachel Michetti)".
* ``rocket`` — launch of DSCOVR on Falcon 9, SpaceX photo "released in the public domain".
* ``motorcycle`` — left image of ``stereo_motorcycle``, from the Middlebury 2014 stereo benchmark
  (Scharstein et al., GCPR 2014), down-sampled by scikit-image; the benchmark asks users to cite
  that paper.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grand_engine.io import rle
from grand_engine.io.images import decode_image
from grand_engine.io.photos import DEMO_IMAGES

__all__ = ["DEMO_IMAGES", "DEMO_MTIME", "build_demo_shard", "demo_annotation"]

DEMO_MTIME = 1_680_307_200  # 2023-04-01T00:00:00Z, fixed so the tar bytes do not depend on the clock
MAX_SIDE = 640
JPEG_QUALITY = 90
MIN_REGIONS, MAX_REGIONS = 10, 40
MIN_REGION_FRACTION = 0.002  # regions under 0.2 % of the image are too small to be useful masks
MASK_SOURCE = "classical segmentation (skimage felzenszwalb), not SAM; scores are placeholders"


def _downscale(arr: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    h, w = arr.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return arr
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS))


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _regions(pixels: np.ndarray) -> list[np.ndarray]:
    """The largest Felzenszwalb regions as boolean masks, biggest first."""
    from skimage.segmentation import felzenszwalb  # deferred: loads scipy (about a second), only to build masks

    h, w = pixels.shape[:2]
    labels = felzenszwalb(pixels, scale=300, sigma=0.8, min_size=int(0.001 * h * w))
    counts = np.bincount(labels.ravel())
    order = np.argsort(-counts, kind="stable")
    keep = [int(k) for k in order[:MAX_REGIONS] if counts[k] >= MIN_REGION_FRACTION * h * w]
    if len(keep) < MIN_REGIONS:
        keep = [int(k) for k in order[:MIN_REGIONS] if counts[k] > 0]
    return [labels == k for k in keep]


def _inner_point(mask: np.ndarray) -> list[float]:
    """A point well inside the mask: the pixel farthest from its border (computed on its bounding box)."""
    from scipy.ndimage import distance_transform_edt  # deferred: scipy (about a second), only to build masks

    ys, xs = np.nonzero(mask)
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    dist = distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(x + x0), float(y + y0)]


def demo_annotation(image_num: int, pixels: np.ndarray, file_name: str) -> dict[str, Any]:
    """An SA-1B-format annotation dict for ``pixels`` (``H×W×3``) from classical segmentation."""
    h, w = pixels.shape[:2]
    rng = np.random.default_rng(image_num)
    anns = []
    for k, mask in enumerate(_regions(pixels)):
        seg = rle.encode(mask)
        x1, y1, x2, y2 = (float(v) for v in rle.to_bbox_xyxy(seg)[0])
        anns.append(
            {
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": int(mask.sum()),
                "segmentation": seg,
                "predicted_iou": round(float(rng.uniform(0.85, 1.0)), 6),
                "point_coords": [_inner_point(mask)],
                "crop_box": [0.0, 0.0, float(w), float(h)],
                "id": image_num * 1000 + k,
                "stability_score": round(float(rng.uniform(0.9, 1.0)), 6),
            }
        )
    return {
        "image": {"image_id": image_num, "width": w, "height": h, "file_name": file_name},
        "annotations": anns,
        "mask_source": MASK_SOURCE,
    }


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _members() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = [
        (
            "README.txt",
            b"grand-engine demo shard in SA-1B layout. Masks come from classical segmentation "
            b"(skimage felzenszwalb), not SAM. Photos: scikit-image sample data (see grand_engine/demo.py).\n",
        )
    ]
    decoded: list[np.ndarray] = []
    for n, (_, load) in enumerate(DEMO_IMAGES, start=1):
        jpeg = _jpeg(_downscale(load()))
        pixels = decode_image(jpeg)  # segment what a reader will decode, not the pre-JPEG array
        decoded.append(pixels)
        out.append((f"sa_{n}.jpg", jpeg))
        out.append((f"sa_{n}.json", _json_bytes(demo_annotation(n, pixels, f"sa_{n}.jpg"))))

    # sa_6: valid header, data cut in half (the JSON is fine).
    cat_small = _downscale(decoded[1], 320)
    whole = _jpeg(cat_small)
    out.append(("sa_6.jpg", whole[: len(whole) // 2]))
    out.append(("sa_6.json", _json_bytes(demo_annotation(6, cat_small, "sa_6.jpg"))))

    # sa_7: a good image whose JSON has one mask of the wrong size.
    coffee_crop = np.ascontiguousarray(decoded[2][40:360, 100:500])
    jpeg7 = _jpeg(coffee_crop)
    doc7 = demo_annotation(7, decode_image(jpeg7), "sa_7.jpg")
    h, w = coffee_crop.shape[:2]
    wrong = np.zeros((h // 2, w // 2), dtype=bool)
    wrong[10:60, 10:90] = True
    doc7["annotations"][1]["segmentation"] = rle.encode(wrong)
    out.append(("sa_7.jpg", jpeg7))
    out.append(("sa_7.json", _json_bytes(doc7)))

    # sa_8: an image without its JSON.
    out.append(("sa_8.jpg", _jpeg(np.ascontiguousarray(decoded[3][:240, :320]))))
    return out


def build_demo_shard(dest_dir: Path, name: str = "sa_000000") -> Path:
    """Write ``dest_dir/<name>.tar`` (see the module docstring) and return its path."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{name}.tar"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tar.tmp", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for member_name, data in _members():
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                info.mtime = DEMO_MTIME
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tf.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
