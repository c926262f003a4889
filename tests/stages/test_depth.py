"""``depth``: the stored encoding and the sampling helpers on hand-made maps, and the stage on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.stages.depth import (
    DEPTH_SCHEMA,
    DepthDecodeError,
    DepthField,
    DepthStage,
    decode_depth,
    encode_depth,
)
from grand_engine.testing import make_unit

# -- encoding ----------------------------------------------------------------------------------------------


def test_round_trip_is_exact_for_representable_values():
    depth = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)  # normalised: 0, .25, .5, 1 (exact in float16)
    row = encode_depth(depth, scale=3.0)
    assert (row["depth_height"], row["depth_width"], row["scale"], row["min"], row["max"]) == (2, 2, 3.0, 0.0, 4.0)
    assert len(row["depth"]) == 2 * 2 * 2
    assert np.frombuffer(row["depth"], dtype="<f2").tolist() == [0.0, 0.25, 0.5, 1.0]  # row-major, little-endian
    assert decode_depth(row).tolist() == depth.tolist()


def test_tiny_and_huge_ranges_survive_float16():
    rng = np.random.default_rng(0)
    for lo, hi in ((1e-9, 7e-8), (1e5, 3e6)):  # below float16's subnormals / above its maximum
        depth = rng.uniform(lo, hi, size=(5, 7))
        decoded = decode_depth(encode_depth(depth, 1.0))
        assert decoded.dtype == np.float32 and decoded.shape == (5, 7)
        assert np.allclose(decoded, depth, rtol=0, atol=(hi - lo) * 2**-10)


def test_constant_map_decodes_to_the_constant():
    row = encode_depth(np.full((3, 4), 2.5), 1.0)
    assert row["min"] == row["max"] == 2.5
    assert decode_depth(row).tolist() == [[2.5] * 4] * 3


def test_bad_maps_and_rows_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        encode_depth(np.array([[1.0, np.nan]]), 1.0)
    with pytest.raises(ValueError, match="scale"):
        encode_depth(np.ones((2, 2)), 0.0)
    good = encode_depth(np.ones((2, 2)), 1.0)
    with pytest.raises(DepthDecodeError, match="expected 8"):
        decode_depth({**good, "depth": good["depth"][:-2]})
    with pytest.raises(DepthDecodeError, match="lacks"):
        decode_depth({**good, "max": None})


# -- sampling at image coordinates ---------------------------------------------------------------------------

# A 4×4 map at 2 image pixels per depth pixel covers an 8×8 image; value = 10·row + col.
FIELD = DepthField(np.add.outer(10 * np.arange(4), np.arange(4)).astype(np.float32), 2.0)


def test_median_in_box():
    assert FIELD.median_in_box([0, 0, 4, 4]) == 5.5  # depth rows 0-1, cols 0-1: 0, 1, 10, 11
    assert FIELD.median_in_box([1, 1, 3, 3]) == 5.5  # touches the same four depth pixels
    assert FIELD.median_in_box([6.5, 0, 7, 2]) == 3.0  # inside depth pixel (0, 3)
    assert FIELD.median_in_box([4, 4, 2, 2]) == 11.0  # corners ordered: [2, 2, 4, 4] is depth pixel (1, 1)
    assert FIELD.median_in_box([0, 0, 100, 100]) == np.median(FIELD.depth)  # clipped to the image
    assert FIELD.median_in_box([3, 3, 3, 5]) is None  # zero width
    assert FIELD.median_in_box([9, 9, 12, 12]) is None  # outside the image
    assert FIELD.median_in_box([np.nan, 0, 1, 1]) is None


def test_median_in_mask_weights_image_pixels():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:, 5] = True  # a one-pixel-wide column: image x = 5 → depth col 2, every depth row
    assert FIELD.median_in_mask(rle.encode(mask)) == 17.0  # 2, 12, 22, 32, each read by two image pixels
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0:3] = True  # image pixels (0,0), (0,1) → depth (0,0) = 0; (0,2) → depth (0,1) = 1
    mask[7, 7] = True  # depth (3,3) = 33
    assert FIELD.median_in_mask(rle.encode(mask)) == 0.5  # median of 0, 0, 1, 33
    assert FIELD.median_in_mask(rle.encode(np.zeros((8, 8), dtype=bool))) is None
    with pytest.raises(ValueError, match="does not match"):
        FIELD.median_in_mask(rle.encode(np.ones((20, 8), dtype=bool)))


def test_field_from_row_reads_back_the_map():
    row = encode_depth(FIELD.depth, 2.0)
    field = DepthField.from_row(row)
    assert field.scale == 2.0
    assert np.allclose(field.depth, FIELD.depth, rtol=0, atol=33 * 2**-11)  # float16 step of the normalised map
    assert field.median_in_box([0, 0, 4, 4]) == pytest.approx(5.5, abs=0.02)


# -- the stage on a tiny model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage(tiny_dir):
    st = DepthStage.configure(
        {"long_side": 64}, models={"depth": ModelSpec(id=str(tiny_dir / "depth-anything-v2"), family="depth")}
    )
    st.setup()
    return st


def test_stage_sizes_scale_and_errors(stage):
    rng = np.random.default_rng(1)
    images = {
        "wide": rng.integers(0, 256, (200, 300, 3), dtype=np.uint8),
        "broken": None,
        "small": rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),
        "tall": rng.integers(0, 256, (100, 60, 3), dtype=np.uint8),
    }
    result = stage.process(make_unit(images))
    assert result.table.schema.equals(DEPTH_SCHEMA, check_metadata=True)
    assert [(e.image_id, e.error_type) for e in result.errors] == [("broken", "OSError")]
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    # long side 64: 300×200 → scale 300/64, height round(200 / 4.6875) = 43; 60×100 → scale 100/64, width 38;
    # 40×30 is already smaller than 64 and keeps its own size (no upsampling)
    expected = {"wide": (43, 64, 300 / 64), "tall": (64, 38, 100 / 64), "small": (30, 40, 1.0)}
    for image_id, (h, w, scale) in expected.items():
        row = rows[image_id]
        assert (row["depth_height"], row["depth_width"]) == (h, w)
        assert row["scale"] == pytest.approx(scale, rel=1e-6)
        depth = decode_depth(row)
        assert depth.shape == (h, w) and np.isfinite(depth).all()
        assert depth.min() == pytest.approx(row["min"], abs=1e-6 * max(1.0, abs(row["min"])))
        assert depth.max() == pytest.approx(row["max"], rel=1e-3, abs=1e-9)


def test_stage_refuses_bad_long_side():
    with pytest.raises(ValueError, match="long_side"):
        DepthStage.configure({"long_side": 0})
