"""``object_depth`` (spec step 17, mask-first) on a synthetic 40×40 image with a 20×20 depth map (scale 2).

Depth pixel ``(i, j)`` covers image pixels ``[2j, 2j+2) × [2i, 2i+2)``; its centre is ``(2j+1, 2i+1)``.

* Object 0, box ``[0,0,20,20]`` (depth pixels rows/cols 0–9, 100 pixels). Its SA-1B mask is an "L": the bar
  ``x < 4`` plus the foot ``16 <= y < 20`` (mask box ``[0,0,20,20]``, IoU 1). Depth pixels whose centre is on the
  L: cols 0–1 of rows 0–9 (20) and rows 8–9 of cols 2–9 (16) = 36 pixels, set to 10; the other 64 are 1.
  Mask median = 10; box median = 1 (64 of 100 pixels).
* Floating object 1, box ``[20,20,40,40]``, no mask: depth rows/cols 10–19 are 5 → 5 from the box.
* Object 2, box ``[30,0,31,10]``, SA-1B mask = the 1-px line ``x = 30, y < 10``: no depth-pixel centre lies on it
  (centres are at odd x), so every mask pixel reads its own depth pixel (col 15, rows 0–4, set to 7) → 7.
* Object 3, zero-width box → null, "empty box"; object 4, box outside the image → null, "empty box".
* Object 5 carries its own (detector) mask over ``[20,0,24,4]`` (depth rows 0–1, cols 10–11, set to 3) and a
  SAM mask over the same box exists: the own mask ranks before the SAM table → 3, "detector mask".
* Object 6 carries an empty own mask, box ``[20,20,40,40]`` → falls back to the box: 5, "box (empty mask)".
* Object 7 matches the SAM mask over ``[24,4,28,8]`` (depth rows 2–3, cols 12–13, set to 4) → 4, "sam mask".
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.io import rle as rle_lib
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.depth import DepthField, encode_depth
from grand_engine.stages.object_depth import OBJECT_DEPTH_SCHEMA, ObjectDepth, mask_centre_values, object_depth
from grand_engine.stages.sa1b import SA1BStage
from grand_engine.testing import make_unit

H = W = 40


def _depth_map() -> np.ndarray:
    d = np.ones((20, 20), dtype=np.float32)
    d[0:10, 0:2] = 10  # the L's bar
    d[8:10, 0:10] = 10  # the L's foot
    d[10:20, 10:20] = 5
    d[0:5, 15] = 7
    d[0:2, 10:12] = 3
    d[2:4, 12:14] = 4
    return d


def _mask(x1, y1, x2, y2, *more) -> dict:
    m = np.zeros((H, W), dtype=bool)
    for a, b, c, e in [(x1, y1, x2, y2), *zip(*[iter(more)] * 4, strict=True)]:
        m[b:e, a:c] = True
    return rle_lib.encode(m)


L_MASK = _mask(0, 0, 4, 20, 0, 16, 20, 20)
LINE_MASK = _mask(30, 0, 31, 10)
EMPTY_MASK = rle_lib.encode(np.zeros((H, W), dtype=bool))


@pytest.fixture(scope="module")
def field() -> DepthField:
    return DepthField.from_row(encode_depth(_depth_map(), 2.0))


def test_mask_median_differs_from_box_median(field):
    assert sorted(set(mask_centre_values(field, L_MASK).tolist())) == [10.0]
    assert mask_centre_values(field, L_MASK).size == 36
    assert object_depth(field, [0, 0, 20, 20], L_MASK, "sa1b mask") == (pytest.approx(10.0), "sa1b mask")
    assert object_depth(field, [0, 0, 20, 20]) == (pytest.approx(1.0), "box")


def test_thin_mask_and_empty_regions(field):
    assert mask_centre_values(field, LINE_MASK).size == 0
    assert object_depth(field, [30, 0, 31, 10], LINE_MASK, "sa1b mask") == (pytest.approx(7.0, abs=0.01), "sa1b mask")
    assert object_depth(field, [20, 20, 40, 40], EMPTY_MASK, "detector mask") == (
        pytest.approx(5.0, abs=0.01),
        "box (empty mask)",
    )
    assert object_depth(field, [10, 10, 10, 30]) == (None, "empty box")
    assert object_depth(field, [50, 50, 60, 60]) == (None, "empty box")
    assert object_depth(field, None) == (None, "no box")
    assert object_depth(field, [0, 0, float("nan"), 4]) == (None, "no box")


def _obj(oid, bbox, segmentation=None):
    return {"id": oid, "bbox": list(bbox), "labels": ["x"], "qualifiers": [""], "attributes": [],
            "segmentation": segmentation}  # fmt: skip


def _ann(aid, bbox, rle):
    return {"id": aid, "bbox": list(bbox), "area": 1.0, "segmentation": rle}


def _unit(depth_row: dict) -> UnitInput:
    link = {
        "image_id": "img",
        "width": W,
        "height": H,
        "objects": [
            _obj(0, [0, 0, 20, 20]),
            _obj(1, [30, 0, 31, 10]),
            _obj(2, [10, 10, 10, 30]),
            _obj(3, [50, 50, 60, 60]),
            _obj(4, [20, 0, 24, 4], segmentation=_mask(20, 0, 24, 4)),
        ],
        "floating_objects": [
            _obj(5, [20, 20, 40, 40]),
            _obj(6, [20, 20, 40, 40], segmentation=EMPTY_MASK),
            _obj(7, [24, 4, 28, 8]),
        ],
        "floating_attributes": [],
        "affordances": [],
        "relationships": [],
        "captions": ["a", "b"],
    }
    sa1b = {"image_id": "img", "annotations": [_ann(1, [0, 0, 20, 20], L_MASK), _ann(2, [30, 0, 31, 10], LINE_MASK)]}
    sam = {"image_id": "img", "annotations": [_ann(0, [20, 0, 24, 4], _mask(20, 0, 24, 4)),
                                              _ann(1, [24, 4, 28, 8], _mask(24, 4, 28, 8))]}  # fmt: skip
    inputs = {"link_phrases": [link], "depth": [{"image_id": "img", **depth_row}], "sa1b": [sa1b], "sam_masks": [sam]}
    return make_unit(["img"], inputs=inputs)


def test_stage_mask_priority_and_notes():
    stage = ObjectDepth.configure()
    assert stage.inputs() == ("link_phrases", "depth", "sa1b", "sam_masks")
    result = stage.process(_unit(encode_depth(_depth_map(), 2.0)))
    assert result.errors == []
    assert result.table.schema.equals(OBJECT_DEPTH_SCHEMA, check_metadata=False)
    depths = result.table.to_pylist()[0]["depths"]
    # Depth is stored as min-max normalised float16: values come back within 0.01 of the map's.
    got = [(d["object_id"], None if d["depth"] is None else round(d["depth"], 2), d["depth_note"]) for d in depths]
    assert got == [
        (0, 10.0, "sa1b mask"),
        (1, 7.0, "sa1b mask"),
        (2, None, "empty box"),
        (3, None, "empty box"),
        (4, 3.0, "detector mask"),
        (5, 5.0, "box"),
        (6, 5.0, "box (empty mask)"),
        (7, 4.0, "sam mask"),
    ]
    assert not any(d["depth"] is not None and math.isnan(d["depth"]) for d in depths)


def test_match_threshold_and_sources_are_parameters():
    # match_iou above 1 matches nothing: every mask-less object falls back to its box (object 0 -> 1.0).
    result = ObjectDepth.configure({"match_iou": 1.01, "mask_sources": ["sa1b"]}).process(
        _unit(encode_depth(_depth_map(), 2.0))
    )
    depths = {
        d["object_id"]: (None if d["depth"] is None else round(d["depth"], 2), d["depth_note"])
        for d in result.table.to_pylist()[0]["depths"]
    }
    assert depths[0] == (1.0, "box")
    assert depths[4] == (3.0, "detector mask")
    assert depths[7] == (4.0, "box")  # the SAM table is not read
    assert ObjectDepth.configure({"mask_sources": ["sa1b"]}).inputs() == ("link_phrases", "depth", "sa1b")


def test_pixel_convention_matches_masks_as_the_reference():
    # object 0 [0, 0, 20, 20] against a SA-1B box [0, 0, 20, 13]: pixel-inclusive IoU 21·14 / 21·21 = .667 >= .65
    # (the SA-1B mask, as in the reference); continuous IoU 20·13 / 20·20 = .65 too, so .66 separates them
    unit = _unit(encode_depth(_depth_map(), 2.0))
    sa1b = {"image_id": "img", "annotations": [_ann(1, [0, 0, 20, 13], L_MASK)]}
    unit.inputs["sa1b"] = pa.Table.from_pylist([sa1b], schema=SA1BStage.schema)
    notes = {}
    for convention in ("continuous", "pixel"):
        stage = ObjectDepth.configure({"match_iou": 0.66, "mask_sources": ["sa1b"], "iou_convention": convention})
        notes[convention] = stage.process(unit).table.to_pylist()[0]["depths"][0]["depth_note"]
    assert notes == {"continuous": "box", "pixel": "sa1b mask"}
    with pytest.raises(ValueError, match="object_depth: iou_convention must be one of continuous, pixel"):
        ObjectDepth.configure({"iou_convention": "px"})


def test_bad_depth_row_is_an_error_row():
    row = encode_depth(_depth_map(), 2.0)
    row["depth"] = row["depth"][:-2]
    result = ObjectDepth.configure().process(_unit(row))
    assert result.table.num_rows == 0
    assert [(e.image_id, e.error_type) for e in result.errors] == [("img", "DepthDecodeError")]
