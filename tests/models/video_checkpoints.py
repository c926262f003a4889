"""The tiny video checkpoints (SAM 2 video, Qwen2.5-VL), built once per test session; import the fixture into a
test module with ``from tests.models.video_checkpoints import video_tiny_dir  # noqa: F401``."""

from __future__ import annotations

from pathlib import Path

import pytest

VIDEO_CHECKPOINTS = ("sam2-video", "qwen2.5-vl", "llama", "owlv2")


@pytest.fixture(scope="session")
def video_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny checkpoints of the video pipeline's model slots (the tiny Llama and OWLv2 too)."""
    from grand_engine.models.tiny import build_all

    dest = tmp_path_factory.mktemp("video_tiny")
    build_all(dest, names=list(VIDEO_CHECKPOINTS))
    return dest
