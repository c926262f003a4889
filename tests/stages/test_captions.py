"""``caption_blip2`` / ``caption_vlm`` (spec steps 11–12) with the tiny BLIP-2 and LLaVA checkpoints.

The expected captions are computed by calling the same adapter directly on the input the stage must build
(the resized image, the prompt file's text, the per-image seed), so the tests check the stage's wiring.
"""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.captions import (
    CAPTION_SCHEMA,
    CaptionBlip2,
    CaptionVLM,
    image_seed,
    normalise_caption,
    resize_long_side,
)
from grand_engine.testing import make_unit


def _pixels(seed: int, h: int, w: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


IMAGES = {"a": _pixels(1, 300, 500), "b": _pixels(2, 420, 240), "c": _pixels(3, 64, 64)}


def _unit(ids: list[str]) -> UnitInput:
    """A unit of ``ids``; ``"broken"`` stands for an image that fails to decode."""
    return make_unit({i: None if i == "broken" else IMAGES[i] for i in ids})


def test_resize_long_side():
    big = _pixels(0, 600, 400)
    out = resize_long_side(big, 384)
    assert out.shape == (384, 256, 3)  # 600 -> 384, 400 * 384/600 = 256
    small = IMAGES["c"]
    assert resize_long_side(small, 384) is small  # never upscaled
    assert resize_long_side(big, 0) is big and resize_long_side(big, None) is big


def test_normalise_caption():
    assert normalise_caption("  A Red  Car\n parked by ROME ") == "a red car parked by rome"
    assert normalise_caption(None) is None


def test_image_seed_is_stable_and_per_image():
    assert image_seed(0, "sa_1") == image_seed(0, "sa_1")
    assert len({image_seed(0, "sa_1"), image_seed(0, "sa_2"), image_seed(1, "sa_1")}) == 3
    assert 0 <= image_seed(7, "x") < 2**31


@pytest.fixture(scope="module")
def blip2(tiny_dir):
    stage = CaptionBlip2.configure(
        {"long_side": 128, "max_new_tokens": 6},
        models={"vlm": ModelSpec(id=str(tiny_dir / "blip2"), family="vlm", dtype="float32")},
        resources={"batch_size": 2},
    )
    stage.setup()
    return stage


def test_blip2_stage_wiring_and_error_row(blip2):
    result = blip2.process(_unit(["a", "broken", "b"]))
    assert result.table.schema.equals(CAPTION_SCHEMA, check_metadata=False)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert sorted(rows) == ["a", "b"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("broken", "OSError")]
    for image_id, row in rows.items():
        # Same model, the image downscaled to a 128-px long side, empty prompt, greedy, 6 new tokens.
        expected = blip2.vlm.generate([resize_long_side(IMAGES[image_id], 128)], "", max_new_tokens=6)[0]
        assert row["caption"] == expected.text.strip()
        assert row["finish_reason"] == expected.finish_reason
        assert row["caption_normalised"] == normalise_caption(row["caption"])


@pytest.fixture(scope="module")
def vlm(tiny_dir):
    stage = CaptionVLM.configure(
        {"max_new_tokens": 5, "temperature": 1.0, "seed": 3},
        models={"vlm": ModelSpec(id=str(tiny_dir / "llava"), family="vlm", dtype="float32")},
        resources={"batch_size": 3},
    )
    stage.setup()
    return stage


def test_vlm_stage_prompt_file_and_per_image_seeds(vlm):
    assert vlm.prompt_text == prompt_file("caption_vlm.txt").read_text().strip()
    assert "one" in vlm.prompt_text.lower() and "sentence" in vlm.prompt_text.lower()
    together = {r["image_id"]: r for r in vlm.process(_unit(["a", "b", "c"])).table.to_pylist()}
    alone = vlm.process(_unit(["b"])).table.to_pylist()[0]
    assert alone == together["b"]  # a caption does not depend on its batch
    expected = vlm.vlm.generate(
        [IMAGES["b"]], vlm.prompt_text, max_new_tokens=5, do_sample=True, temperature=1.0, seed=image_seed(3, "b")
    )[0]
    assert alone["caption"] == expected.text.strip()
    assert alone["caption_normalised"] == normalise_caption(expected.text)


def test_stage_declarations():
    assert CaptionBlip2.name == "caption_blip2" and CaptionVLM.name == "caption_vlm"
    assert CaptionBlip2.model_slots == ("vlm",) and CaptionBlip2.needs_pixels
    assert CaptionVLM.configure().params() == {
        "prompt": "caption_vlm.txt",
        "temperature": 0.2,
        "top_p": 1.0,
        "max_new_tokens": 1024,
        "seed": 0,
    }
    with pytest.raises(ValueError, match="needs a model in its 'vlm' slot"):
        CaptionBlip2.configure().setup()
