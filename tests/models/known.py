"""Known-answer test images and oracle heads.

A known-answer test loads a real tiny checkpoint (processor and network) through the adapter, then replaces the
network's *output head* with an oracle: a function of the network's real input tensor whose answer is known by
construction. Everything around it runs for real: the processor's resize / pad / normalise, batching, the
library's post-processing, the adapter's label mapping, coordinate conversion and clipping. The test then checks
the final pixel boxes, masks, depth values and labels against what was drawn into the image.

Test images are a black canvas with one white rectangle (``bright_image``); the oracle finds the white rectangle in
the network's input frame (``bright_box_in_input``), so a wrong resize, a lost padding offset or swapped axes shows
up as a wrong box in the original image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from grand_engine.io.images import decode_image


@dataclass(frozen=True)
class Case:
    """An image with a white rectangle ``box`` (xyxy pixels, exclusive right/bottom) on black."""

    name: str
    image: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]


def bright_image(width: int, height: int, box: tuple[int, int, int, int], color=(255, 255, 255)) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = color
    return image


def _box_at(width: int, height: int) -> tuple[int, int, int, int]:
    """A rectangle off the centre, in the lower right, so that swapped axes or a flipped frame move it."""
    return (round(0.35 * width), round(0.45 * height), round(0.8 * width), round(0.9 * height))


def exif_jpeg(displayed: np.ndarray, orientation: int = 6) -> bytes:
    """JPEG bytes whose *stored* pixels are ``displayed`` turned so that applying EXIF ``orientation`` (6: rotate
    90° clockwise to display) gives ``displayed`` back."""
    from PIL import Image

    if orientation != 6:
        raise ValueError("only orientation 6 is used here")
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))  # 90° counter-clockwise; displaying turns it back
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def cases() -> list[Case]:
    """Odd non-square, smaller than every processor input, larger than every input, and EXIF-rotated."""
    out = []
    for name, (w, h) in {"odd-301x199": (301, 199), "small-45x37": (45, 37), "large-1501x1123": (1501, 1123)}.items():
        box = _box_at(w, h)
        out.append(Case(name, bright_image(w, h, box), box))
    displayed_box = _box_at(161, 239)
    decoded = decode_image(exif_jpeg(bright_image(161, 239, displayed_box)))
    assert decoded.shape == (239, 161, 3), decoded.shape  # the decoder applied the rotation
    out.append(Case("exif6-161x239", decoded, displayed_box))
    return out


CASES = cases()
CASE_IDS = [c.name for c in CASES]


def bright_box_in_input(channel: np.ndarray, valid_hw: tuple[int, int] | None = None) -> tuple[float, ...]:
    """The white rectangle of one input channel (``H×W`` array in the network's frame) as normalised
    ``(cx, cy, w, h)`` over ``valid_hw`` (the unpadded part, top-left aligned; default the whole frame)."""
    h, w = channel.shape if valid_hw is None else valid_hw
    region = channel[:h, :w]
    lo, hi = float(region.min()), float(region.max())
    mask = region > hi - 0.25 * (hi - lo)
    ys, xs = np.nonzero(mask)
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)


def tolerance(case: Case, input_hw: tuple[int, int]) -> float:
    """Pixels a box edge may move: one input pixel mapped back to the image, plus one for resampling and JPEG."""
    return 1.0 + max(case.height / input_hw[0], case.width / input_hw[1], 1.0)


def assert_box(found, case: Case, input_hw: tuple[int, int]) -> None:
    tol = tolerance(case, input_hw)
    np.testing.assert_allclose(np.asarray(found, np.float64), np.asarray(case.box, np.float64), atol=tol)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
