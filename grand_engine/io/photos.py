"""The photographs the demo and the model smoke test use: five images shipped inside scikit-image.

Their licences are quoted in :mod:`grand_engine.demo` (public domain or CC0, and the Middlebury stereo benchmark's
citation request for the motorcycle).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage import data as skimage_data


def _motorcycle() -> np.ndarray:
    return skimage_data.stereo_motorcycle()[0]


def _loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return getattr(skimage_data, name)()

    return load


DEMO_IMAGES: tuple[tuple[str, Callable[[], np.ndarray]], ...] = (
    ("astronaut", _loader("astronaut")),
    ("cat", _loader("chelsea")),
    ("coffee", _loader("coffee")),
    ("rocket", _loader("rocket")),
    ("motorcycle", _motorcycle),
)
"""The five good images, in ``sa_1`` … ``sa_5`` order."""
