"""Tiny CLIP and DINO checkpoints for the CASS tests, built once per session (the CLIP one is the project's
``clip-vit`` tiny checkpoint; the DINO one comes from :func:`grand_engine.ovss.backbones.build_tiny_dino_vit`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cass_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(clip_dir, dino_dir)``."""
    from grand_engine.models.tiny import build_one
    from grand_engine.ovss.backbones import build_tiny_dino_vit

    root = tmp_path_factory.mktemp("cass")
    clip_dir = build_one("clip-vit", root).path
    dino_dir = root / "dino-vit"
    dino_dir.mkdir()
    build_tiny_dino_vit(dino_dir)
    return clip_dir, dino_dir
