"""The detector slots: row building and query construction by hand, and each stage on a tiny real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.labels import read_category_file
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.detectors import (
    DETECTIONS_SCHEMA,
    DetectClosed,
    DetectLvis,
    DetectOV,
    DetectOV2,
    detections_row,
    query_text,
    tag_queries,
)
from grand_engine.testing import make_unit

LVIS = set(read_category_file("lvis_v1_categories.txt"))
COCO = set(read_category_file("coco_categories.txt"))


def unit_of(images: dict[str, np.ndarray], tags: dict[str, list[str]] | None = None) -> UnitInput:
    """A unit of ``images`` with, when ``tags`` is given, a ``tagging`` table (every tag scored 0.5)."""
    inputs = {}
    if tags is not None:
        inputs["tagging"] = [{"image_id": i, "tags": tags[i], "scores": [0.5] * len(tags[i])} for i in images]
    return make_unit(images, inputs=inputs)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "a": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (90, 70, 3), dtype=np.uint8),
    }


def check_rows(result, images, allowed_labels=None, threshold=None, strict=False, max_detections=None):
    """Format checks every detector table must pass."""
    assert result.errors == []
    assert result.table.schema.equals(DETECTIONS_SCHEMA, check_metadata=True)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert list(rows) == list(images)
    for image_id, row in rows.items():
        h, w = images[image_id].shape[:2]
        assert len(row["boxes"]) == len(row["scores"]) == len(row["labels"])
        for x1, y1, x2, y2 in row["boxes"]:
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        assert row["scores"] == sorted(row["scores"], reverse=True)
        if allowed_labels is not None:
            labels = allowed_labels(image_id) if callable(allowed_labels) else allowed_labels
            assert set(row["labels"]) <= set(labels)
        if threshold is not None:
            assert all((s > threshold) if strict else (s >= threshold) for s in row["scores"])
        if max_detections is not None:
            assert len(row["boxes"]) <= max_detections
    return rows


# -- hand-checked helpers --------------------------------------------------------------------------------------


def test_detections_row_filters_orders_clips_and_caps():
    boxes = [
        [10, 10, 20, 20],  # 0.5
        [30, 40, -5, 5],  # 0.9: corners ordered to [-5, 5, 30, 40], clipped to [0, 5, 30, 40]
        [0, 0, math.nan, 1],  # 0.95: non-finite → dropped
        [90, 90, 120, 130],  # 0.05: clipped to the 100×100 image
        [1, 1, 2, 2],  # 0.5: ties keep the model's order
    ]
    scores = [0.5, 0.9, 0.95, 0.05, 0.5]
    labels = ["a", "b", "c", "d", "e"]
    row = detections_row("x", boxes, scores, labels, 100, 100, threshold=0.05)
    assert row["labels"] == ["b", "a", "e", "d"]
    assert row["boxes"] == [[0, 5, 30, 40], [10, 10, 20, 20], [1, 1, 2, 2], [90, 90, 100, 100]]
    assert row["scores"] == pytest.approx([0.9, 0.5, 0.5, 0.05])
    assert detections_row("x", boxes, scores, labels, 100, 100, threshold=0.05, strict=True)["labels"] == [
        "b",
        "a",
        "e",
    ]
    assert detections_row("x", boxes, scores, labels, 100, 100, max_detections=2)["labels"] == ["b", "a"]
    empty = detections_row("x", np.zeros((0, 4)), [], [], 10, 10, threshold=0.0)
    assert empty == {"image_id": "x", "boxes": [], "scores": [], "labels": []}
    with pytest.raises(ValueError, match="align"):
        detections_row("x", boxes, scores, labels[:2], 100, 100)


def test_query_construction_tags_plus_trees():
    assert tag_queries(["dog", "Trees", "  cat  ", "", "dog"], ("trees",)) == ["dog", "Trees", "cat"]
    assert tag_queries(["dog", "grass"], ("trees",)) == ["dog", "grass", "trees"]
    assert tag_queries(None, ("trees",)) == ["trees"]
    assert tag_queries(["a  b"], ()) == ["a b"]
    assert tag_queries([], ()) == []


def test_query_text_is_readable_lvis():
    assert query_text("sandal_(type_of_shoe)") == "sandal (type of shoe)"
    assert query_text("traffic_light") == "traffic light"
    assert (
        query_text("monitor_(computer_equipment) computer_monitor") == "monitor (computer equipment, computer monitor)"
    )


def test_reference_defaults_and_parameter_checks():
    assert (DetectClosed.configure({}).threshold, DetectClosed.strict_threshold) == (0.0, True)  # step 4: > 0
    assert (DetectLvis.configure({}).threshold, DetectLvis.strict_threshold) == (0.05, True)  # step 5: > 0.05
    assert (DetectOV.configure({}).threshold, DetectOV.strict_threshold) == (0.05, False)  # step 6: >= 0.05
    assert (DetectOV2.configure({}).threshold, DetectOV2.strict_threshold) == (0.05, True)  # step 7
    assert DetectOV.configure({}).extra_queries == ("trees",) == DetectOV2.configure({}).extra_queries
    assert DetectOV.requires == DetectOV2.requires == ("images", "tagging")
    with pytest.raises(ValueError, match="max_detections"):
        DetectLvis.configure({"max_detections": -1})
    with pytest.raises(ValueError, match="threshold"):
        DetectOV.configure({"threshold": float("nan")})
    with pytest.raises(ValueError, match="extra_queries"):
        DetectOV.configure({"extra_queries": "trees"})


# -- tiny models -------------------------------------------------------------------------------------------


def spec(tiny_dir, name, family):
    return {"detector": ModelSpec(id=str(tiny_dir / name), family=family)}


def test_detect_closed_on_a_closed_set_detector(tiny_dir, images):
    stage = DetectClosed.configure({"max_detections": 7}, models=spec(tiny_dir, "dfine", "detector"))
    stage.setup()
    rows = check_rows(stage.process(unit_of(images)), images, COCO, threshold=0.0, strict=True, max_detections=7)
    assert all(len(r["boxes"]) == 7 for r in rows.values())  # 30 queries, every score > 0: the cap applies


def test_detect_lvis_on_owl_queries_readable_names_and_stores_raw_entries(tiny_dir, images):
    # OWL-ViT rather than the default OWLv2: the same adapter class, a quarter of the patches on CPU
    stage = DetectLvis.configure({"max_detections": 5}, models=spec(tiny_dir, "owlvit", "owl"))
    stage.setup()
    assert stage.detector.vocabulary[910] == "sandal (type of shoe)"  # what the model is asked
    rows = check_rows(stage.process(unit_of(images)), images, LVIS, threshold=0.05, strict=True, max_detections=5)
    assert any(r["labels"] for r in rows.values())


def test_detect_closed_on_an_open_vocabulary_model_uses_the_coco_file(tiny_dir, images):
    stage = DetectClosed.configure({"max_detections": 5}, models=spec(tiny_dir, "owlvit", "owl"))
    stage.setup()
    assert len(stage.detector.vocabulary) == 80 and "traffic light" in stage.detector.vocabulary
    check_rows(stage.process(unit_of(images)), images, COCO, max_detections=5)


def test_detect_ov_queries_each_image_with_its_tags_and_trees(tiny_dir, images):
    stage = DetectOV.configure({"threshold": 0.0}, models=spec(tiny_dir, "owlvit", "owl"))
    stage.setup()
    tags = {"a": ["cat", "sofa"], "b": ["bicycle"]}
    unit = unit_of(images, tags)
    assert stage.queries(unit, "a") == ["cat", "sofa", "trees"]
    rows = check_rows(stage.process(unit), images, lambda i: [*tags[i], "trees"], threshold=0.0)
    # threshold 0 keeps every patch prediction (576 for OWL-ViT B/32 at 768²), each labelled with its best query
    assert len(rows["a"]["labels"]) == len(rows["b"]["labels"]) == 576


def test_detect_ov_without_any_query_gives_an_empty_row(tiny_dir, images):
    stage = DetectOV.configure({"extra_queries": []}, models=spec(tiny_dir, "owlvit", "owl"))
    stage.setup()
    rows = check_rows(stage.process(unit_of(images, {"a": [], "b": ["cup"]})), images, lambda i: ["cup"])
    assert rows["a"] == {"image_id": "a", "boxes": [], "scores": [], "labels": []}


def test_detect_ov2_on_grounding_dino(tiny_dir, images):
    stage = DetectOV2.configure({"max_detections": 6}, models=spec(tiny_dir, "grounding-dino", "grounding_dino"))
    stage.setup()
    tags = {"a": ["Red car", "road"], "b": ["person"]}
    rows = check_rows(
        stage.process(unit_of(images, tags)),
        images,
        lambda i: [*tags[i], "trees"],
        threshold=0.05,
        strict=True,
        max_detections=6,
    )
    assert any(r["labels"] for r in rows.values())


def test_tag_query_slots_refuse_a_closed_set_model(tiny_dir):
    stage = DetectOV2.configure({}, models=spec(tiny_dir, "dfine", "detector"))
    with pytest.raises(ValueError, match="open-vocabulary"):
        stage.setup()
