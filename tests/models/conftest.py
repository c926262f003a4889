"""Fixtures of the model-adapter tests (the tiny checkpoints come from the top-level `tiny_dir` fixture)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def two_images() -> list[np.ndarray]:
    """Two RGB images of different sizes and aspect ratios: 300 wide × 200 high and 180 wide × 260 high."""
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8),
        rng.integers(0, 256, size=(260, 180, 3), dtype=np.uint8),
    ]
