"""The explorer's dataset page on the demo output of ``conftest.py``, as written and in Chromium.

Known answers, from the demo shard and the hand-built level-4 rows: image *n* (``sa_1`` … ``sa_5`` are n = 0 … 4) has
the labels ``VOCAB[n .. n+7]`` (cyclically), so ``rocket`` (VOCAB[3]) is on ``sa_1``–``sa_4``, ``cat`` (VOCAB[1]) on
``sa_1``, ``sa_2``, ``sa_5`` and ``flag`` (VOCAB[9]) on ``sa_3``–``sa_5``; its dense caption names "a small
VOCAB[n+6]", so "small sky" is in ``sa_1``'s captions only and in nobody's labels. The shard's broken entries give one
error row each: ``sa_6`` ImageError and ``sa_8`` MissingAnnotation (images stage), ``sa_7`` AnnotationSizeMismatch
(sa1b stage).
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from grand_engine.explore.site import build_site
from tests.explore.cdp import Chromium, find_chromium
from tests.explore.test_browser import CHROMIUM, artifacts  # noqa: F401  (the artifacts fixture)

ERRORS = {"sa_6": "ImageError", "sa_8": "MissingAnnotation", "sa_7": "AnnotationSizeMismatch"}


def _page(site: Path) -> str:
    return (site / "dataset.html").read_text()


def test_dataset_page_lists_stages_search_entries_and_error_rows(demo_out, tmp_path):
    site = tmp_path / "site"
    report = build_site(demo_out, site, stats=False)
    page = _page(site)
    assert report.dataset == site / "dataset.html"
    assert 'href="dataset.html"' in (site / "index.html").read_text()
    assert page.count('<li class="hit"') == 5
    assert page.count('<tr class="error-row"') == 3
    for image_id, error_type in ERRORS.items():
        assert f'data-type="{error_type}"><td>' in page and f"<td>{image_id}</td>" in page
    assert '<option value="ImageError">ImageError (1)</option>' in page
    # the stage table comes from the records: 5 good images reached sa1b, 8 entries were read by images
    assert "<tr><td>sa1b</td><td>1/1</td><td>6</td><td>5</td><td>1</td><td>AnnotationSizeMismatch 1</td></tr>" in page
    # no statistics and not asked to compute them: the page says how to get them (if this installation can)
    if importlib.util.find_spec("grand_engine.quality.stats") is not None:
        assert f"No statistics yet: run `grand-engine stats {demo_out}`, then build this site again." in page
    else:
        assert "Dataset statistics come from `grand-engine stats`, which this installation lacks." in page


def test_dataset_page_shows_the_stats_commands_figures_and_plots(demo_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(demo_out, out)
    png = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 30, 30)).save(png, format="PNG")
    (out / "_stats").mkdir()
    (out / "_stats" / "labels_top.png").write_bytes(png.getvalue())
    stats = {"generated_at": "2026-01-02T03:04:05Z", "plots": [{"name": "labels_top", "file": "labels_top.png"}]}
    stats["plots"][0]["title"] = "Most frequent labels"
    (out / "_stats" / "stats.json").write_text(json.dumps(stats))
    site = tmp_path / "site"
    build_site(out, site)
    page = _page(site)
    assert f"from {out}/_stats/stats.json (2026-01-02T03:04:05Z)" in page
    assert '<img src="stats/labels_top.png" alt="Most frequent labels">' in page
    assert (site / "stats" / "labels_top.png").read_bytes() == png.getvalue()
    assert 'id="stats-report"' in page


def _visible(browser: Chromium, selector: str) -> list[str]:
    return browser.evaluate(
        f"Array.from(document.querySelectorAll({selector!r})).filter(e => !e.hidden)"
        ".map(e => e.getAttribute('data-image-id') || e.getAttribute('data-type'))"
    )


def _type(browser: Chromium, text: str, where: str) -> None:
    browser.evaluate(
        f"document.querySelector(\"input[name='search-in'][value='{where}']\").click();"
        f"var s = document.getElementById('search'); s.value = {text!r};"
        "s.dispatchEvent(new Event('input'));"
    )


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (`make browser` installs it)")
def test_dataset_page_search_and_error_filter_in_chromium(demo_out, tmp_path, artifacts):  # noqa: F811
    site = tmp_path / "site"
    build_site(demo_out, site, stats=False)
    with Chromium(CHROMIUM) as browser:
        browser.open((site / "index.html").as_uri())
        assert browser.evaluate("document.getElementById('dataset-link').getAttribute('href')") == "dataset.html"
        browser.open((site / "dataset.html").as_uri())
        assert browser.evaluate("document.body.getAttribute('data-dataset-ready')") == "1"
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert _visible(browser, "li.hit") == ["sa_1", "sa_2", "sa_3", "sa_4", "sa_5"]

        _type(browser, "rocket", "labels")
        assert _visible(browser, "li.hit") == ["sa_1", "sa_2", "sa_3", "sa_4"]
        assert browser.evaluate("document.getElementById('search-count').textContent") == "4 of 5 images"
        _type(browser, "Cat", "labels")  # case does not matter
        assert _visible(browser, "li.hit") == ["sa_1", "sa_2", "sa_5"]
        _type(browser, "flag", "labels")
        assert _visible(browser, "li.hit") == ["sa_3", "sa_4", "sa_5"]
        _type(browser, "small sky", "captions")
        assert _visible(browser, "li.hit") == ["sa_1"]
        _type(browser, "small sky", "labels")
        assert _visible(browser, "li.hit") == []
        _type(browser, "stands beside", "both")
        assert len(_visible(browser, "li.hit")) == 5
        browser.screenshot(artifacts / "dataset_search.png")

        assert sorted(_visible(browser, "tr.error-row")) == sorted(ERRORS.values())
        browser.evaluate(
            "var t = document.getElementById('error-type'); t.value = 'MissingAnnotation';"
            "t.dispatchEvent(new Event('change'));"
        )
        assert _visible(browser, "tr.error-row") == ["MissingAnnotation"]
        assert browser.evaluate("document.getElementById('error-count').textContent") == "1 of 3 rows listed"
        browser.evaluate("window.grandDataset.filterErrors('')")
        assert len(_visible(browser, "tr.error-row")) == 3
        browser.screenshot(artifacts / "dataset_errors.png")
        assert browser.errors() == []
