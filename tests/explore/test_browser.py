"""The explorer in a real browser: Debian's headless Chromium, driven over the DevTools protocol on a pipe.

Renders the demo output (``conftest.py``: 5 images, 7 masks and 8 boxes each), opens the index and the page of
``sa_1`` from ``file://`` and checks: no console error, exception or failed load; every picture loaded; the
expected number of mask overlays; the canvas drawn by ``explorer.js`` changes as overlays are toggled, and the
pixels of one object's mask are exactly where its RLE says; clicking a phrase singles out its object. Screenshots
are kept in ``$GRAND_TEST_ARTIFACTS`` (default ``build/test-artifacts/explorer``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from grand_engine.explore.site import build_site
from grand_engine.io import rle
from tests.explore.cdp import Chromium, find_chromium
from tests.explore.conftest import BOXES_PER_IMAGE, MASKED_PER_IMAGE

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; `make browser` does it)"
)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("GRAND_TEST_ARTIFACTS", REPO / "build" / "test-artifacts")) / "explorer"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clicks(browser: Chromium, selector: str) -> None:
    browser.evaluate(f"document.querySelectorAll({selector!r}).forEach(function (el) {{ el.click(); }})")


def test_explorer_pages_in_chromium(demo_out, tmp_path, artifacts):
    site = tmp_path / "site"
    build_site(demo_out, site)
    row = next(
        r for r in pq.read_table(next((demo_out / "level4").rglob("*.parquet"))).to_pylist() if r["image_id"] == "sa_1"
    )
    mask4 = rle.decode(row["objects"][4]["segmentation"])
    inside_y, inside_x = (int(v) for v in np.argwhere(mask4)[len(np.argwhere(mask4)) // 2])
    outside_y, outside_x = (int(v) for v in np.argwhere(~mask4)[0])

    with Chromium(CHROMIUM) as browser:
        browser.open((site / "index.html").as_uri())
        assert browser.evaluate("document.querySelectorAll('.card').length") == 5
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        browser.screenshot(artifacts / "index.png")

        browser.open((site / "images" / "sa_1.html").as_uri())
        assert browser.evaluate("document.body.getAttribute('data-explorer-ready')") == "1"
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert browser.evaluate("window.grandExplorer.maskLayers") == MASKED_PER_IMAGE
        assert browser.evaluate("document.querySelectorAll('tr.object[data-mask=\"1\"]').length") == MASKED_PER_IMAGE
        assert browser.evaluate("document.querySelectorAll('input.object-toggle').length") == BOXES_PER_IMAGE
        # The JS RLE decoder agrees with pycocotools' areas for every mask.
        for obj in row["objects"]:
            area = int(rle.area(obj["segmentation"])[0])
            assert browser.evaluate(f"window.grandExplorer.maskPixels({obj['id']})") == area

        shot_all = browser.screenshot(artifacts / "image_page.png")
        painted_all = browser.evaluate("window.grandExplorer.paintedPixels()")
        browser.evaluate("document.getElementById('toggle-masks').click()")
        painted_boxes = browser.evaluate("window.grandExplorer.paintedPixels()")
        shot_boxes = browser.screenshot(artifacts / "image_page_masks_off.png")
        assert 0 < painted_boxes < painted_all and shot_boxes != shot_all
        browser.evaluate("document.getElementById('toggle-boxes').click()")
        assert browser.evaluate("window.grandExplorer.paintedPixels()") == 0

        # Masks back on, boxes off, every object but 4 switched off: exactly object 4's pixels are painted.
        browser.evaluate("document.getElementById('toggle-masks').click()")
        _clicks(browser, "input.object-toggle:not([data-id='4'])")
        assert browser.evaluate("window.grandExplorer.paintedPixels()") == int(mask4.sum())
        assert browser.evaluate(f"window.grandExplorer.alphaAt({inside_x}, {inside_y})") > 0
        assert browser.evaluate(f"window.grandExplorer.alphaAt({outside_x}, {outside_y})") == 0

        # Clicking the phrase of object 4's neighbour (the first dense-caption phrase, object 0) pins it.
        _clicks(browser, "input.object-toggle:not([data-id='4'])")
        browser.evaluate("document.querySelector('#dense-caption mark').click()")
        assert browser.evaluate("window.grandExplorer.state.focus") == [0]
        mask0 = rle.decode(row["objects"][0]["segmentation"])
        y0, x0 = (int(v) for v in np.argwhere(mask0 & ~mask4)[0])
        assert browser.evaluate(f"window.grandExplorer.alphaAt({x0}, {y0})") == int(0.7 * 255 + 0.5)  # Math.round
        assert browser.evaluate(f"window.grandExplorer.alphaAt({inside_x}, {inside_y})") == int(0.06 * 255 + 0.5)
        browser.screenshot(artifacts / "image_page_phrase_focus.png")

        assert browser.errors() == []
