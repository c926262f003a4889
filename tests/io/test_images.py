"""Header probing, decoding, colour conversion and the decompression-bomb guard (grand_engine.io.images)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from grand_engine.io.images import (
    MAX_PIXELS_DEFAULT,
    MIN_SIDE_DEFAULT,
    ImageError,
    ImageInfo,
    ImageTooSmall,
    decode_image,
    probe_image,
)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def handmade_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width×height`` but holds a tiny IDAT (a few hundred bytes in all)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def test_jpeg_probe_and_decode() -> None:
    arr = np.zeros((30, 40, 3), np.uint8)
    arr[:, :20] = (250, 10, 10)
    arr[:, 20:] = (10, 10, 250)
    data = encode(Image.fromarray(arr), "JPEG", quality=95)
    assert probe_image(data) == ImageInfo(width=40, height=30, format="JPEG", orientation=1)
    out = decode_image(data)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out[15, 5].astype(int) - (250, 10, 10)).max() < 12
    assert np.abs(out[15, 35].astype(int) - (10, 10, 250)).max() < 12


def test_png_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[0, :, 3] = [0, 255, 128]  # transparent, opaque, half
    rgba[1, :, 3] = 255
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    assert probe_image(data) == ImageInfo(3, 2, "PNG", 1)
    out = decode_image(data)
    # 255 * a/255 + 255 * (1 - a/255) for red; 0 * a + 255 * (1 - a/255) for green and blue
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[0, 2].tolist() == [255, 127, 127]
    la = encode(Image.fromarray(np.array([[[100, 0], [100, 255]]], np.uint8), "LA"), "PNG")
    assert decode_image(la).tolist() == [[[255, 255, 255], [100, 100, 100]]]


def test_palette_and_16bit_greyscale_png() -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert decode_image(encode(pal, "PNG")).tolist() == [[[0, 0, 0], [0, 200, 0]]]
    grey16 = Image.fromarray(np.array([[0, 65535, 257 * 100]], np.uint16))
    assert decode_image(encode(grey16, "PNG")).tolist() == [[[0] * 3, [255] * 3, [100] * 3]]


def test_greyscale_and_cmyk_jpeg_are_converted() -> None:
    grey = decode_image(encode(Image.new("L", (8, 6), 77), "JPEG", quality=95))
    assert grey.shape == (6, 8, 3) and np.abs(grey.astype(int) - 77).max() <= 1
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # no cyan/black, full magenta+yellow = red
    data = encode(cmyk, "JPEG", quality=95)
    assert probe_image(data).format == "JPEG"
    out = decode_image(data)
    assert out.shape == (8, 8, 3)
    assert np.abs(out[4, 4].astype(int) - (255, 0, 0)).max() < 10


def test_webp_probe_and_decode() -> None:
    data = encode(Image.new("RGB", (21, 13), (0, 120, 240)), "WEBP", lossless=True)
    assert probe_image(data) == ImageInfo(21, 13, "WEBP", 1)
    assert decode_image(data)[6, 10].tolist() == [0, 120, 240]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_6_swaps_size_and_rotates(fmt: str) -> None:
    # Stored 40 wide × 20 tall with a red block in the stored top-left corner.
    arr = np.full((20, 40, 3), 255, np.uint8)
    arr[:8, :8] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode(im, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    assert probe_image(data) == ImageInfo(width=20, height=40, format=fmt, orientation=6)
    out = decode_image(data)
    assert out.shape == (40, 20, 3)
    # Rotating clockwise moves the stored top-left corner to the displayed top-right corner.
    assert np.abs(out[3, 16].astype(int) - (255, 0, 0)).max() < 12
    assert np.abs(out[3, 3].astype(int) - (255, 255, 255)).max() < 12


def test_one_pixel_image() -> None:
    data = encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG")
    assert probe_image(data) == ImageInfo(1, 1, "PNG", 1)
    assert decode_image(data).tolist() == [[[9, 99, 199]]]


@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 8), (8, 7), (3, 40), (40, 3), (4, 4)])
def test_image_below_the_minimum_side_is_refused_naming_size_and_limit(width, height) -> None:
    assert MIN_SIDE_DEFAULT == 8
    for fmt in ("PNG", "JPEG"):
        data = encode(Image.new("RGB", (width, height), (9, 99, 199)), fmt)
        with pytest.raises(ImageTooSmall, match=f"{fmt} image is {width}×{height} pixels, below the minimum side"):
            probe_image(data, min_side=MIN_SIDE_DEFAULT)
        with pytest.raises(ImageTooSmall, match="min_side = 8"):
            probe_image(data, min_side=8)
        assert probe_image(data, min_side=min(width, height)) == ImageInfo(width, height, fmt, 1)


def test_image_at_the_minimum_side_is_accepted() -> None:
    for size in ((8, 8), (8, 300), (300, 8)):
        data = encode(Image.new("RGB", size, (1, 2, 3)), "PNG")
        assert probe_image(data, min_side=MIN_SIDE_DEFAULT) == ImageInfo(*size, "PNG", 1)
    assert issubclass(ImageTooSmall, ImageError)  # one except clause still catches every unusable image


def test_huge_png_header_is_refused_without_allocating() -> None:
    data = handmade_png(30000, 30000)
    assert len(data) < 200
    tracemalloc.start()
    try:
        for fn in (probe_image, decode_image):
            with pytest.raises(ImageError, match="30000×30000 = 900000000 pixels"):
                fn(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert 30000 * 30000 > MAX_PIXELS_DEFAULT


def test_huge_jpeg_sof_is_refused() -> None:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)  # height, width
    with pytest.raises(ImageError, match="900000000 pixels"):
        probe_image(bytes(data))
    with pytest.raises(ImageError, match="max_pixels"):
        decode_image(encode(Image.new("RGB", (40, 30)), "PNG"), max_pixels=1000)


def test_zero_size_is_refused() -> None:
    with pytest.raises(ImageError, match="zero size"):
        probe_image(handmade_png(0, 10))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, world", "not an image"),
        (b'{"annotations": []}', "not an image"),
        (encode(Image.new("RGB", (4, 4)), "GIF"), "unsupported image format GIF"),
        (encode(Image.new("RGB", (4, 4)), "BMP"), "unsupported image format BMP"),
    ],
)
def test_non_images_are_refused(data: bytes, reason: str) -> None:
    for fn in (probe_image, decode_image):
        with pytest.raises(ImageError, match=reason):
            fn(data)


def test_truncated_jpeg_and_png() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = encode(noisy, "JPEG", quality=90)
    cut = jpeg[: len(jpeg) // 2]
    assert issubclass(ImageError, ValueError)
    with pytest.raises(ImageError, match="truncated JPEG"):
        probe_image(cut)
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(cut)
    png = encode(noisy, "PNG")
    with pytest.raises(ImageError, match="truncated PNG"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(ImageError, match="truncated"):
        probe_image(jpeg[:40])


def test_corrupt_scan_data_is_an_image_error() -> None:
    png = bytearray(encode(Image.new("RGB", (32, 32), (1, 2, 3)), "PNG"))
    idat = png.index(b"IDAT")
    png[idat + 4 : idat + 12] = b"\xff" * 8  # garbage zlib stream, CRC now wrong too
    with pytest.raises(ImageError, match="corrupt PNG"):
        decode_image(bytes(png))


def test_pillow_globals_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small MAX_IMAGE_PIXELS cannot refuse a valid image; LOAD_TRUNCATED_IMAGES cannot admit a cut one."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for fmt in ("JPEG", "PNG"):
        data = encode(Image.new("RGB", (40, 30), (0, 0, 255)), fmt)
        assert decode_image(data).shape == (30, 40, 3)
    jpeg = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(jpeg[: len(jpeg) * 2 // 3])
