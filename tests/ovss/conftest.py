"""The tiny CLIP and DINO checkpoints of the CASS tests (``clip-vit-b16`` and ``dino-vit`` of the session's
``tiny_dir``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cass_checkpoints(tiny_dir: Path) -> tuple[Path, Path]:
    """``(clip_dir, dino_dir)``."""
    return tiny_dir / "clip-vit-b16", tiny_dir / "dino-vit"
