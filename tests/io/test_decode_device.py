"""JPEG decoding on another device (``decode_image(device=…)``, ``GRAND_DECODE_DEVICE``): torchvision's decoder,
EXIF orientation on that path, and the fall-back on Pillow where the device cannot decode (no GPU here)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from grand_engine.io import images as images_module
from grand_engine.io.images import DECODE_DEVICE_ENV, decode_device, decode_image, decode_jpeg_torch


def _jpeg(arr: np.ndarray, orientation: int = 1) -> bytes:
    im = Image.fromarray(arr)
    buf = io.BytesIO()
    exif = im.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    im.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


PHOTO = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_torchvision_decodes_a_jpeg_as_pillow_does() -> None:
    data = _jpeg(PHOTO)
    mine = decode_jpeg_torch(data, "cpu")
    assert mine is not None and mine.shape == (48, 64, 3) and mine.dtype == np.uint8
    # both are libjpeg-turbo; the GPU's nvJPEG may differ by a level or two, which the option's docstring states
    assert np.abs(mine.astype(int) - decode_image(data).astype(int)).max() <= 2


def test_the_device_path_applies_the_exif_orientation(monkeypatch: pytest.MonkeyPatch) -> None:
    arr = np.full((20, 40, 3), 255, np.uint8)
    arr[:8, :8] = (255, 0, 0)
    data = _jpeg(arr, orientation=6)
    used: list[str] = []

    def on_cpu(payload: bytes, device: str) -> np.ndarray | None:
        used.append(device)
        return decode_jpeg_torch(payload, "cpu")  # torchvision's decoder standing in for the GPU's

    monkeypatch.setattr(images_module, "decode_jpeg_torch", on_cpu)
    out = decode_image(data, device="cuda")
    assert used == ["cuda"]
    assert out.shape == (40, 20, 3)
    assert np.abs(out[3, 16].astype(int) - (255, 0, 0)).max() < 12  # stored top-left is displayed top-right
    assert np.abs(out.astype(int) - decode_image(data).astype(int)).max() <= 2


def test_without_the_device_it_falls_back_on_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = _jpeg(PHOTO)
    assert decode_jpeg_torch(data, "cuda") is None
    assert np.array_equal(decode_image(data, device="cuda"), decode_image(data))
    png = io.BytesIO()
    Image.fromarray(PHOTO).save(png, format="PNG")  # not a JPEG: Pillow whatever the device
    assert np.array_equal(decode_image(png.getvalue(), device="cuda"), PHOTO)


def test_a_cmyk_jpeg_the_decoder_refuses_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "decode_jpeg_torch", lambda payload, device: None)
    cmyk = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk, format="JPEG", quality=95)
    out = decode_image(cmyk.getvalue(), device="cuda")
    assert np.abs(out[4, 4].astype(int) - (255, 0, 0)).max() < 10


def test_decode_device_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DECODE_DEVICE_ENV, raising=False)
    assert decode_device() == "cpu"
    monkeypatch.setenv(DECODE_DEVICE_ENV, "cuda:1")
    assert decode_device() == "cuda:1"
    monkeypatch.setenv(DECODE_DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match="GRAND_DECODE_DEVICE must be 'cpu', 'cuda' or 'cuda:N'"):
        decode_device()
