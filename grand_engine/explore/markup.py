"""What every explorer page builder shares: the packaged page templates, HTML escaping and the JPEGs pages show.

The image explorer (:mod:`grand_engine.explore.site`) and the video explorer (:mod:`grand_engine.explore.video`)
write their pages with these.
"""

from __future__ import annotations

import html
import string
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TEMPLATES = Path(__file__).resolve().parent / "templates"
"""The packaged page templates, stylesheets and scripts."""

JPEG_QUALITY = 88
"""Quality of the JPEGs written for pages (thumbnails, frames)."""


def template(name: str) -> string.Template:
    """The packaged template ``name`` (``$placeholders`` filled with :meth:`string.Template.substitute`)."""
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def escape(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it can fill an attribute); ``None`` is the empty string."""
    return html.escape("" if value is None else str(value))


def save_jpeg(path: Path, array: np.ndarray, max_side: int | None = None) -> None:
    """Write the RGB ``array`` as a JPEG at ``path`` (folders created), shrunk to fit ``max_side`` when given."""
    im = Image.fromarray(array)
    if max_side and max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="JPEG", quality=JPEG_QUALITY)
