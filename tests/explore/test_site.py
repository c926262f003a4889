"""The static explorer's files (no browser): pages, embedded data, escaping, overlays, the command line.

The demo output of ``conftest.py`` has 5 images (``sa_1`` … ``sa_5``), each with 6 objects with masks, floating
object 6 with a mask and floating object 7 without, and a dense caption with 5 grounded phrases.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from grand_engine.cli.show import add_parser as add_show_parser
from grand_engine.cli.show import run as cmd_show
from grand_engine.explore.site import (
    ImageData,
    _script_json,
    build_site,
    hex_color,
    highlight,
    object_color,
    render_overlay,
)
from grand_engine.grandf.reader import MissingStageError
from grand_engine.io import rle
from tests.explore.conftest import BOXES_PER_IMAGE, MASKED_PER_IMAGE
from tests.grandf.level4 import H, W, detail, scene_row


def _page_data(html_text: str) -> dict:
    match = re.search(r'<script type="application/json" id="grand-data">(.*?)</script>', html_text, flags=re.S)
    return json.loads(match.group(1))


def test_site_pages_and_embedded_data(demo_out, tmp_path):
    site = tmp_path / "site"
    report = build_site(demo_out, site)
    assert report.pages == 5 and report.total_images == 5 and report.without_pixels == [] and report.stage == "level4"
    index = (site / "index.html").read_text()
    assert index.count('class="card"') == 5 and "verified 4" in index and "failed 1" in index
    for name in ("assets/explorer.js", "assets/explorer.css", "media/sa_1.jpg", "thumbs/sa_1.jpg"):
        assert (site / name).is_file(), name

    page = (site / "images" / "sa_1.html").read_text()
    data = _page_data(page)
    level4 = {r["image_id"]: r for r in pq.read_table(next((demo_out / "level4").rglob("*.parquet"))).to_pylist()}
    row = level4["sa_1"]
    assert (data["width"], data["height"]) == (row["width"], row["height"])
    assert len(data["objects"]) == BOXES_PER_IMAGE
    assert sum(o["rle"] is not None for o in data["objects"]) == MASKED_PER_IMAGE
    assert data["objects"][0]["rle"] == row["objects"][0]["segmentation"]["counts"]
    assert [o["kind"] for o in data["objects"]].count("floating") == 2
    assert page.count('data-mask="1"') == MASKED_PER_IMAGE and page.count('class="object-toggle"') == 8

    # Grounded phrases: each <mark> shows the caption's text at its span and names its ids.
    dense = row["dense_caption"]
    marks = re.findall(
        r'<mark class="([^"]+)" style="--c:(#[0-9a-f]{6})" data-ids="([0-9 ]+)"[^>]*>(.*?)</mark>',
        page.split('id="dense-caption"')[1].split("</p>")[0],
    )
    assert [(m[3], m[2]) for m in marks] == [
        (dense["caption"][d["tokens_positive"][0] : d["tokens_positive"][1]], " ".join(map(str, d["ids"])))
        for d in dense["details"]
    ]
    assert [m[0] for m in marks].count("phrase nomask") == 1  # object 7 has no mask
    assert marks[0][1] == hex_color(0)
    # Caption text is escaped, never interpreted.
    assert "&lt;b&gt;&amp;amp&lt;/b&gt;" in page and "<b>&amp</b>" not in page
    for section in (
        "Immediate Foreground",
        "Extra context",
        "Context paragraph for image sa_1",
        "Short captions",
        "GranD-f record: 4 phrases with masks, exported; dropped: a table (no_mask)",
    ):
        assert section in page, section
    assert 'rel="next"' in page and 'rel="prev"' not in page
    assert "not exported: verification_failed" in (site / "images" / "sa_3.html").read_text()


def test_single_image_and_levels(demo_out, tmp_path):
    report = build_site(demo_out, tmp_path / "one", image_id="sa_3")
    assert report.pages == 1 and sorted(p.name for p in (tmp_path / "one" / "images").iterdir()) == ["sa_3.html"]
    assert build_site(demo_out, tmp_path / "two", images=2).pages == 2
    with pytest.raises(MissingStageError, match="sa_99"):
        build_site(demo_out, tmp_path / "x", image_id="sa_99")
    with pytest.raises(MissingStageError, match="level3"):
        build_site(demo_out, tmp_path / "x", level=3)


def test_overlay_colours_masks_exactly():
    row = scene_row()
    data = ImageData("u", row, {"width": W, "height": H})
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    out = render_overlay(data, pixels, boxes=False, alpha=0.5)
    dog = rle.decode(row["objects"][0]["segmentation"])
    cat = rle.decode(row["floating_objects"][1]["segmentation"])
    expected_dog = (np.array(object_color(0), dtype=np.float32) * 0.5).astype(np.uint8)
    assert (out[dog] == expected_dog).all()
    assert (out[cat] == (np.array(object_color(3), dtype=np.float32) * 0.5).astype(np.uint8)).all()
    untouched = ~(dog | cat | rle.decode(row["objects"][1]["segmentation"]))
    assert (out[untouched] == 0).all()
    assert (render_overlay(data, pixels, boxes=False, floating=False, alpha=0.5)[cat] == 0).all()
    grey = render_overlay(data, None, masks=False, boxes=False)
    assert grey.shape == (H, W, 3) and (grey == 96).all()  # no pixels: a grey canvas of the image's size


def test_highlight_nested_and_non_ascii():
    caption = "Ünder a café table, a cat"
    details = [
        detail("a café table", [6, 18], [1]),
        detail("café", [8, 12], [2]),  # nested: listed apart, not inline
        detail("a cat", [20, 25], [3]),
        detail("the sky", None, [1]),
    ]
    text, rest = highlight(caption, details, masked={1})
    assert text.startswith('Ünder <mark class="phrase"')
    assert '>a café table</mark>, <mark class="phrase nomask"' in text and text.endswith(">a cat</mark>")
    assert [d["phrase"] for d in rest] == ["the sky", "café"]  # spanless first, then nested


def test_script_json_cannot_close_the_script():
    text = _script_json({"label": "</script><script>alert(1)</script>", "sep": "\u2028"})
    assert "</script" not in text and "\u2028" not in text
    assert json.loads(text) == {"label": "</script><script>alert(1)</script>", "sep": "\u2028"}


def test_missing_pixels_page_still_renders(tmp_path):
    from tests.grandf.level4 import images_table, level4_table, write_output

    rows = [scene_row("sa_1")]
    write_output(
        tmp_path / "out",
        {
            "s/00000": {
                "images": images_table(
                    [{"image_id": "sa_1", "width": W, "height": H, "source": str(tmp_path / "gone.tar")}]
                ),
                "level4": level4_table(rows),
            }
        },
    )
    report = build_site(tmp_path / "out", tmp_path / "site")
    assert report.without_pixels == ["sa_1"]
    page = (tmp_path / "site" / "images" / "sa_1.html").read_text()
    assert 'class="nopixels"' in page and "no scene_graph table" in page


def test_show_command(demo_out, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_show_parser(parser.add_subparsers(dest="command"))
    png = tmp_path / "sa_2.png"
    args = parser.parse_args(["show", str(demo_out), "--image", "sa_2", "--png", str(png), "--no-progress"])
    assert cmd_show(args) == 0
    from PIL import Image

    with Image.open(png) as im:
        level4 = pq.read_table(next((demo_out / "level4").rglob("*.parquet"))).to_pylist()
        sa_2 = next(r for r in level4 if r["image_id"] == "sa_2")
        assert im.size == (sa_2["width"], sa_2["height"])
    assert "overlay of sa_2" in capsys.readouterr().out
    assert cmd_show(parser.parse_args(["show", str(demo_out)])) == 2
    assert cmd_show(parser.parse_args(["show", str(tmp_path / "empty"), "--html", str(tmp_path / "h")])) == 2


PROGRESS_LINE = r"explorer: (\d+)/5 images \(\d+%\), [\d.]+ images/s, \d\d:\d\d elapsed(, ETA \d\d:\d\d)?"


def test_show_progress_on_a_non_terminal(demo_out, tmp_path, capsys):
    """stderr is not a terminal under pytest: lines, not a bar; the last one says all 5 pages are written."""
    parser = argparse.ArgumentParser()
    add_show_parser(parser.add_subparsers(dest="command"))
    assert cmd_show(parser.parse_args(["show", str(demo_out), "--html", str(tmp_path / "site")])) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(re.fullmatch(PROGRESS_LINE, line) for line in lines) and "\r" not in "".join(lines)
    assert lines[-1].startswith("explorer: 5/5 images (100%)") and "ETA" not in lines[-1]

    assert cmd_show(parser.parse_args(["show", str(demo_out), "--html", str(tmp_path / "s2"), "--no-progress"])) == 0
    assert capsys.readouterr().err == ""
