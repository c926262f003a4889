"""``region_captions``: region filtering by hand and the stage on the tiny Florence-2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.stages.region_captions import REGION_CAPTIONS_SCHEMA, RegionCaptionsStage, region_row
from grand_engine.testing import make_unit


def test_region_row_rules():
    regions = [
        ((10, 10, 50, 40), "  a red   car ", 1.0),  # kept, whitespace collapsed
        ((60, 50, 20, 10), "a tree", 0.9),  # inverted corners ordered
        ((0, 0, 10, 10), "", 1.0),  # empty description: dropped
        ((5, 5, 5, 30), "a pole", 1.0),  # zero width: dropped
        ((90, 70, 150, 120), "a sign", 0.8),  # clipped to the 100×80 image
        ((0, 0, math.inf, 10), "sky", 1.0),  # non-finite: dropped
        ((1, 1, 9, 9), "a cup", 0.5),  # below the 0.7 threshold
        ((0, 0, 100, 80), "a street", 0.7),  # >= threshold
    ]
    row = region_row("x", regions, 100, 80, score_threshold=0.7, max_regions=0)
    assert row["descriptions"] == ["a red car", "a tree", "a sign", "a street"]
    assert row["boxes"] == [[10, 10, 50, 40], [20, 10, 60, 50], [90, 70, 100, 80], [0, 0, 100, 80]]
    assert row["scores"] == pytest.approx([1.0, 0.9, 0.8, 0.7])
    capped = region_row("x", regions, 100, 80, score_threshold=0.7, max_regions=2)
    assert capped["descriptions"] == ["a red car", "a tree"]  # model order, first max_regions kept
    assert region_row("x", regions[5:7], 100, 80, score_threshold=0.0, max_regions=0)["descriptions"] == ["a cup"]


def test_reference_defaults_and_checks():
    stage = RegionCaptionsStage.configure({})
    assert (stage.score_threshold, stage.max_regions, stage.default_score) == (0.7, 256, 1.0)
    with pytest.raises(ValueError, match="max_regions"):
        RegionCaptionsStage.configure({"max_regions": -2})
    with pytest.raises(ValueError, match="default_score"):
        RegionCaptionsStage.configure({"default_score": float("nan")})


def test_stage_on_tiny_florence2(tiny_dir):
    rng = np.random.default_rng(2)
    images = {
        "a": rng.integers(0, 256, (120, 200, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (150, 90, 3), dtype=np.uint8),
    }
    stage = RegionCaptionsStage.configure(
        {"max_regions": 3, "max_new_tokens": 48},
        models={"vlm": ModelSpec(id=str(tiny_dir / "florence2"), family="vlm")},
    )
    stage.setup()
    result = stage.process(make_unit(images))
    assert result.errors == []
    assert result.table.schema.equals(REGION_CAPTIONS_SCHEMA, check_metadata=True)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert list(rows) == ["a", "b"]
    total = 0
    for image_id, row in rows.items():
        h, w = images[image_id].shape[:2]
        assert len(row["boxes"]) == len(row["scores"]) == len(row["descriptions"]) <= 3
        total += len(row["boxes"])
        for x1, y1, x2, y2 in row["boxes"]:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert all(d and d == " ".join(d.split()) for d in row["descriptions"])
        assert row["scores"] == [1.0] * len(row["scores"])  # Florence-2 gives no score: default_score
    assert total > 0  # the tiny Florence-2 is built to emit <loc_> runs, so regions are parsed
