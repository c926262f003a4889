"""Closed-set detector adapter on the tiny D-FINE / RT-DETR / RT-DETRv2 checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.imaging import Detections
from grand_engine.resources import data_file

COCO = [n for n in data_file("coco_categories.txt").read_text().splitlines() if n]


@pytest.mark.parametrize("name", ["dfine", "rtdetr", "rtdetr-v2"])
def test_detect_two_images(tiny_dir: Path, two_images: list[np.ndarray], name: str) -> None:
    detector = load_adapter(ModelSpec(id=str(tiny_dir / name), family="detector"))
    assert detector.class_names == COCO
    out = detector.detect(two_images, threshold=0.0)
    assert len(out) == 2
    for det, image in zip(out, two_images, strict=True):
        h, w = image.shape[:2]
        assert isinstance(det, Detections)
        assert len(det) == 30  # num_queries of the tiny config, all kept at threshold 0
        assert det.boxes.shape == (30, 4) and det.boxes.dtype == np.float32
        assert det.scores.dtype == np.float32 and det.label_ids.dtype == np.int64
        assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= w).all()
        assert (det.boxes[:, 1] >= 0).all() and (det.boxes[:, 3] <= h).all()
        assert (det.boxes[:, 2] >= det.boxes[:, 0]).all() and (det.boxes[:, 3] >= det.boxes[:, 1]).all()
        assert det.labels == [COCO[i] for i in det.label_ids]
    # a threshold keeps exactly the detections scoring at least that much
    cut = float(np.median(out[0].scores))
    kept = detector.detect(two_images[:1], threshold=cut)[0]
    expected = np.sort(out[0].scores[out[0].scores >= cut])
    np.testing.assert_allclose(np.sort(kept.scores), expected, rtol=1e-5)
