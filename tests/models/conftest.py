"""Shared fixtures of the model-adapter tests: the tiny checkpoints (built once per session) and test images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Any accidental Hub access must fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every registered tiny checkpoint (all families), built once into a session temp dir."""
    from grand_engine.models.tiny import build_all

    dest = tmp_path_factory.mktemp("tiny")
    build_all(dest)
    return dest


@pytest.fixture(scope="session")
def two_images() -> list[np.ndarray]:
    """Two RGB images of different sizes and aspect ratios: 300 wide × 200 high and 180 wide × 260 high."""
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8),
        rng.integers(0, 256, size=(260, 180, 3), dtype=np.uint8),
    ]
