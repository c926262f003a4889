"""Image probing and decoding for JPEG, PNG and WebP, with a decompression-bomb guard.

:func:`probe_image` reads the format, size and EXIF orientation from the header bytes with small
parsers of its own: it never builds a pixel buffer, so a file that claims 30000×30000 pixels costs
nothing. It also checks that the data is complete (JPEG end-of-image marker after the scan data,
PNG ``IEND`` chunk, WebP RIFF length), so a truncated file is rejected before any stage decodes it.

**Decompression-bomb guard.** Both functions refuse an image whose header claims more than
``max_pixels`` pixels (default :data:`MAX_PIXELS_DEFAULT` = 100 million, about a 10000×10000
photo; SA-1B images are about 1500×2250 = 3.4 million). The check uses the header's width×height
before any pixel is decoded. It does not rely on Pillow's global ``Image.MAX_IMAGE_PIXELS``: JPEG
and PNG are opened through their plugin classes, which skip that global check, so a valid image
below ``max_pixels`` decodes whatever the global says. Pillow's WebP plugin checks the global in
its own constructor; if it refuses an image that ``max_pixels`` allows, the error says so.

**Minimum size.** :func:`probe_image` refuses an image whose shorter side is below ``min_side`` with
:class:`ImageTooSmall` (the ``images`` stage passes :data:`MIN_SIDE_DEFAULT` = 8; the function's own default,
1, accepts any non-empty image). Models cannot be trusted with tinier inputs: Hugging Face image processors
guess the channel axis from the array's shape and take a leading 1, 3 or 4 for the channels, so an image 1 or
4 pixels tall crashes the depth and detector models deep inside, and one 3 pixels tall is silently read
transposed.

**Colour.** :func:`decode_image` always returns ``H×W×3`` uint8 RGB in displayed orientation (EXIF
orientation applied). Greyscale is replicated to three channels (16-bit greyscale is scaled to 8
bits), CMYK and palette images are converted, and **transparency is composited onto white** (a
transparent pixel becomes ``(255, 255, 255)``). Orientation comes from the EXIF tag only (XMP
orientation is ignored); an unreadable EXIF block counts as orientation 1.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DECODE_DEVICE_ENV",
    "MAX_PIXELS_DEFAULT",
    "MIN_SIDE_DEFAULT",
    "ImageError",
    "ImageInfo",
    "ImageTooSmall",
    "decode_device",
    "decode_image",
    "probe_image",
]

MAX_PIXELS_DEFAULT = 100_000_000
"""Largest accepted width×height (decompression-bomb guard); about 300 MB once decoded to RGB."""
MIN_SIDE_DEFAULT = 8
"""Smallest accepted width and height for the pipeline. Image processors of the Hugging Face models take an
array 1, 3 or 4 pixels tall for channels-first (so 1×1 and 4×4 images crash the depth and detector models and a
3-pixel-tall one is read transposed); 8 pixels, one JPEG block, clears that with a margin, and SA-1B images are
~1500 pixels on their shorter side."""

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
# SOF markers carry the frame size: C0-C3, C5-C7, C9-CB, CD-CF (C4 = DHT, C8 = JPG, CC = DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}
_OTHER_FORMATS = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\x00\x00\x01\x00", "ICO"),
)


class ImageError(ValueError):
    """The bytes are not a supported, complete image within the pixel limit."""


class ImageTooSmall(ImageError):
    """A valid image whose width or height is below the minimum side the pipeline accepts."""


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of an image; ``width``/``height`` are after EXIF rotation (as displayed)."""

    width: int
    height: int
    format: str  # "JPEG" | "PNG" | "WEBP"
    orientation: int  # EXIF orientation tag, 1 = as stored


@dataclass(frozen=True)
class _Header:
    format: str
    width: int  # as stored
    height: int
    exif: bytes | None


# -- header parsers --------------------------------------------------------------------------------
def _parse_header(data: bytes) -> _Header:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError("not an image: the data is empty")
    if data.startswith(b"\xff\xd8"):
        return _parse_jpeg(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _parse_png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _parse_webp(data)
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            raise ImageError(f"unsupported image format {name} (supported: JPEG, PNG, WebP)")
    raise ImageError(f"not an image: unrecognised header bytes {data[:8]!r}")


def _parse_jpeg(data: bytes) -> _Header:
    pos, n = 2, len(data)
    width = height = None
    exif: bytes | None = None
    while True:
        # Markers are 0xFF followed by a code; extra 0xFF fill bytes are allowed before the code.
        if pos < n and data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)  # tolerate stray bytes between segments, as libjpeg does
            if pos < 0:
                pos = n
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise ImageError("truncated JPEG: the data ends inside the header segments")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise ImageError("corrupt JPEG: end-of-image marker before any scan data")
        if pos + 2 > n:
            raise ImageError("truncated JPEG: the data ends inside a segment length")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ImageError(f"corrupt JPEG: segment 0xFF{marker:02X} has length {length}")
        body = data[pos + 2 : pos + length]
        if len(body) < length - 2:
            raise ImageError(f"truncated JPEG: segment 0xFF{marker:02X} is cut off")
        if marker in _JPEG_SOF:
            if len(body) < 6:
                raise ImageError("corrupt JPEG: frame header too short")
            height, width = struct.unpack(">HH", body[1:5])
        elif marker == 0xE1 and exif is None and body.startswith(b"Exif\x00\x00"):
            exif = body
        elif marker == 0xDA:  # start of scan: entropy-coded data follows
            if width is None or height is None:
                raise ImageError("corrupt JPEG: scan data before any frame header")
            scan_start = pos + length
            # Entropy-coded data stuffs every 0xFF as 0xFF00, so an end-of-image marker after the
            # first scan marks complete data; a truncated file has none.
            if data.rfind(b"\xff\xd9") < scan_start:
                raise ImageError("truncated JPEG: no end-of-image marker after the scan data")
            return _Header("JPEG", width, height, exif)
        pos += length


def _parse_png(data: bytes) -> _Header:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageError("corrupt PNG: missing IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    exif: bytes | None = None
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        if ctype == b"eXIf":
            exif = data[pos + 8 : pos + 8 + length]
        if ctype in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    if data.rfind(b"IEND") < 33:
        raise ImageError("truncated PNG: no IEND chunk")
    return _Header("PNG", width, height, exif)


def _parse_webp(data: bytes) -> _Header:
    (riff_size,) = struct.unpack("<I", data[4:8])
    if len(data) < 8 + riff_size:
        raise ImageError(f"truncated WebP: RIFF says {8 + riff_size} bytes, got {len(data)}")
    pos = 12
    width = height = None
    exif: bytes | None = None
    end = 8 + riff_size
    while pos + 8 <= end:
        ctype = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"VP8X" and len(body) >= 10:
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif ctype == b"VP8 " and width is None and len(body) >= 10:
            if body[3:6] != b"\x9d\x01\x2a":
                raise ImageError("corrupt WebP: bad VP8 start code")
            w, h = struct.unpack("<HH", body[6:10])
            width, height = w & 0x3FFF, h & 0x3FFF
        elif ctype == b"VP8L" and width is None and len(body) >= 5:
            if body[0] != 0x2F:
                raise ImageError("corrupt WebP: bad VP8L signature")
            bits = int.from_bytes(body[1:5], "little")
            width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif ctype == b"EXIF":
            exif = body
        pos += 8 + length + (length & 1)
    if width is None or height is None:
        raise ImageError("corrupt WebP: no VP8/VP8L/VP8X chunk with the image size")
    return _Header("WEBP", width, height, exif)


def _orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    from PIL import Image

    try:
        tags = Image.Exif()
        tags.load(exif)
        value = int(tags.get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _check(header: _Header, max_pixels: int) -> None:
    if header.width <= 0 or header.height <= 0:
        raise ImageError(f"{header.format} header gives a zero size ({header.width}×{header.height})")
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ImageError(
            f"{header.format} header claims {header.width}×{header.height} = {pixels} pixels, more than "
            f"max_pixels = {max_pixels} (decompression-bomb guard; raise max_pixels to accept it)"
        )


def probe_image(data: bytes, max_pixels: int = MAX_PIXELS_DEFAULT, min_side: int = 1) -> ImageInfo:
    """Format, displayed size and EXIF orientation from the header bytes; never decodes pixels.

    Raises :class:`ImageError` for non-images, formats other than JPEG/PNG/WebP, a zero size, a
    size above ``max_pixels``, and truncated data; :class:`ImageTooSmall` when the width or the height
    is below ``min_side``.
    """
    header = _parse_header(data)
    _check(header, max_pixels)
    if min(header.width, header.height) < min_side:
        raise ImageTooSmall(
            f"{header.format} image is {header.width}×{header.height} pixels, below the minimum side of "
            f"min_side = {min_side} (models misread or crash on tinier inputs; lower min_side to accept it)"
        )
    orientation = _orientation(header.exif)
    w, h = header.width, header.height
    if orientation in _SWAPS_AXES:
        w, h = h, w
    return ImageInfo(width=w, height=h, format=header.format, orientation=orientation)


# -- decoding --------------------------------------------------------------------------------------
def _open(header: _Header, data: bytes):
    from PIL import Image, JpegImagePlugin, PngImagePlugin

    fp = io.BytesIO(data)
    if header.format == "JPEG":
        return JpegImagePlugin.JpegImageFile(fp)
    if header.format == "PNG":
        return PngImagePlugin.PngImageFile(fp)
    from PIL import WebPImagePlugin

    try:
        return WebPImagePlugin.WebPImageFile(fp)
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"Pillow's global Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS}) refuses this "
            f"{header.width}×{header.height} WebP although max_pixels allows it; raise or unset that global"
        ) from exc


def _to_rgb(im) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I"):  # 16/32-bit greyscale
        arr = np.asarray(im).astype(np.float64) / 257.0  # 0..65535 -> 0..255
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
        if mode == "RGB":
            return np.asarray(im, dtype=np.uint8)
    if mode in ("LA", "La", "PA", "RGBa", "RGBA") or (mode in ("L", "RGB") and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        out = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255  # composite onto white
        return out.astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


DECODE_DEVICE_ENV = "GRAND_DECODE_DEVICE"
"""Where the engine's pixel loader decodes JPEGs: ``cpu`` (default, Pillow) or ``cuda`` / ``cuda:N`` (nvJPEG)."""


def decode_device() -> str:
    """The JPEG decode device of the pixel loader, from ``GRAND_DECODE_DEVICE`` (``cpu`` when unset)."""
    device = os.environ.get(DECODE_DEVICE_ENV, "").strip() or "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"{DECODE_DEVICE_ENV} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return device


def decode_jpeg_torch(data: bytes, device: str) -> np.ndarray | None:
    """``H×W×3`` uint8 RGB of a JPEG decoded by ``torchvision.io.decode_jpeg`` on ``device`` (nvJPEG on a CUDA
    device), stored orientation (no EXIF rotation); None when torchvision, the device or the decoder cannot do it
    (a CMYK JPEG on the GPU, say), so that the caller falls back on Pillow."""
    try:
        # torch and torchvision are heavy and optional here: imported only when a JPEG is decoded this way
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    if device.startswith("cuda") and not torch.cuda.is_available():
        return None
    try:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except (RuntimeError, ValueError):
        return None
    return np.ascontiguousarray(decoded.permute(1, 2, 0).cpu().numpy())


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS_DEFAULT, device: str = "cpu") -> np.ndarray:
    """Decode to an ``H×W×3`` uint8 RGB array in displayed orientation (EXIF applied).

    Greyscale, CMYK and palette images are converted; transparency is composited onto white.
    Raises :class:`ImageError` for everything :func:`probe_image` rejects and for corrupt data.
    ``device`` other than ``cpu`` decodes JPEGs there with :func:`decode_jpeg_torch` (nvJPEG on a GPU; its inverse
    DCT may differ from libjpeg's by a grey level or so), falling back on Pillow when it cannot.
    """
    from PIL import Image

    header = _parse_header(data)
    _check(header, max_pixels)
    orientation = _orientation(header.exif)
    if device != "cpu" and header.format == "JPEG":
        rgb = decode_jpeg_torch(data, device)
        if rgb is not None and rgb.shape == (header.height, header.width, 3):
            return np.ascontiguousarray(_apply_orientation(rgb, orientation) if orientation != 1 else rgb)
    try:
        im = _open(header, bytes(data))
        if im.size != (header.width, header.height):
            raise ImageError(
                f"{header.format} decoder reports size {im.size}, header says {header.width}×{header.height}"
            )
        im.load()
        rgb = _to_rgb(im)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, struct.error, IndexError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"corrupt {header.format} data: {exc}") from exc
    if orientation != 1:
        rgb = _apply_orientation(rgb, orientation)
    return np.ascontiguousarray(rgb)


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Map stored pixels to displayed pixels for EXIF orientations 2–8."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:  # transpose
        return arr.transpose(1, 0, 2)
    if orientation == 6:  # rotate 90° clockwise
        return np.rot90(arr, k=-1)
    if orientation == 7:  # transverse (mirror across the anti-diagonal)
        return arr[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:  # rotate 90° counter-clockwise
        return np.rot90(arr, k=1)
    return arr
