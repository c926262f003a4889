"""VLM adapter on the tiny BLIP-2, LLaVA, Florence-2 and Kosmos-2 checkpoints."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.vlm import (
    DENSE_REGION_CAPTION,
    PHRASE_GROUNDING,
    VLM,
    Generation,
    GroundedCaption,
    RegionText,
    box_to_loc_bins,
    box_to_loc_tokens,
    clip_box,
    kosmos_entities_to_pixels,
    loc_bins_to_box,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = {
    "blip2": "a photo of",
    "llava": "Describe the image.",
    "florence2": "<CAPTION>",
    "kosmos2": "<grounding>An image of",
}


def _images() -> list:
    """Two images of different sizes: a 400x300 PIL image and a 150x200 array."""
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    tall = rng.integers(0, 255, (200, 150, 3), dtype=np.uint8)
    return [wide, tall]


_LOADED: dict[str, VLM] = {}


def _vlm(tiny_dir: Path, name: str) -> VLM:
    if name not in _LOADED:
        adapter = load_adapter(ModelSpec(id=str(tiny_dir / name), family="vlm"))
        assert isinstance(adapter, VLM)
        _LOADED[name] = adapter
    return _LOADED[name]


@pytest.fixture(scope="module")
def florence(tiny_dir: Path) -> VLM:
    return _vlm(tiny_dir, "florence2")


@pytest.mark.parametrize("name", ["blip2", "llava", "florence2", "kosmos2"])
def test_generate_batch_of_two_sizes(tiny_dir: Path, name: str) -> None:
    vlm = _vlm(tiny_dir, name)
    out = vlm.generate(_images(), PROMPTS[name], max_new_tokens=4)
    assert len(out) == 2
    for gen in out:
        assert isinstance(gen, Generation)
        assert isinstance(gen.text, str)
        assert gen.finish_reason in ("stop", "length")
    assert vlm.chat is (name == "llava")  # only the LLaVA processor carries a chat template


@pytest.mark.parametrize("name", ["blip2", "llava", "florence2", "kosmos2"])
def test_batched_equals_one_by_one(tiny_dir: Path, name: str) -> None:
    """Prompts of different lengths in one batch (left padding) give the texts they give alone."""
    vlm = _vlm(tiny_dir, name)
    images = _images()
    prompts = [PROMPTS[name], PROMPTS[name] + " a man riding a brown horse next to a fence"]
    if name == "florence2":
        prompts[1] = "<CAPTION_TO_PHRASE_GROUNDING>a man riding a brown horse next to a fence"
    batched = vlm.generate(images, prompts, max_new_tokens=5)
    alone = [vlm.generate([im], p, max_new_tokens=5)[0] for im, p in zip(images, prompts, strict=True)]
    assert batched == alone


def test_llava_prompt_goes_through_the_chat_template(tiny_dir: Path) -> None:
    vlm = _vlm(tiny_dir, "llava")
    assert vlm._prompt("What is shown?") == "USER: <image>\nWhat is shown? ASSISTANT:"
    already = "USER: <image>\nHi ASSISTANT:"
    assert vlm._prompt(already) == already  # a prompt that holds the image token is used as given


def test_sampling_is_seeded(tiny_dir: Path) -> None:
    vlm = _vlm(tiny_dir, "llava")
    images = _images()
    kwargs = {"max_new_tokens": 6, "do_sample": True, "temperature": 1.0}
    a = vlm.generate(images, "Describe.", seed=5, **kwargs)
    b = vlm.generate(images, "Describe.", seed=5, **kwargs)
    c = vlm.generate(images, "Describe.", seed=6, **kwargs)
    assert a == b
    assert [g.text for g in a] != [g.text for g in c]
    greedy = vlm.generate(images, "Describe.", max_new_tokens=6)
    assert all(g.finish_reason == "length" for g in greedy)  # the random model emits no EOS in six tokens


def test_bad_inputs_are_named(tiny_dir: Path) -> None:
    vlm = _vlm(tiny_dir, "blip2")
    with pytest.raises(ValueError, match="got 3 prompts for 2 images"):
        vlm.generate(_images(), ["a", "b", "c"], max_new_tokens=2)
    with pytest.raises(TypeError, match="expected a PIL image"):
        vlm.generate(["not an image"], "a", max_new_tokens=2)
    with pytest.raises(NotImplementedError, match="needs a Florence-2 checkpoint"):
        vlm.dense_region_captions(_images())


# ---------------------------------------------------------------------- Florence-2 coordinates


def test_loc_tokens_by_hand() -> None:
    # 400x300 image: one bin is 0.4 px wide and 0.3 px high.
    # x1 10/0.4 = 25, y1 20/0.3 = 66.7 -> 66, x2 200/0.4 = 500, y2 150/0.3 = 500
    assert box_to_loc_bins((10, 20, 200, 150), (400, 300)) == (25, 66, 500, 500)
    assert box_to_loc_tokens((10, 20, 200, 150), (400, 300)) == "<loc_25><loc_66><loc_500><loc_500>"
    # the full image clamps to the last bin
    assert box_to_loc_bins((0, 0, 400, 300), (400, 300)) == (0, 0, 999, 999)
    # back: bin centres (q + 0.5) * size / 1000
    assert loc_bins_to_box((25, 66, 500, 500), (400, 300)) == pytest.approx((10.2, 19.95, 200.2, 150.15))
    assert loc_bins_to_box((0, 0, 999, 999), (400, 300)) == pytest.approx((0.2, 0.15, 399.8, 299.85))


def test_clip_box_orders_and_clips() -> None:
    assert clip_box((350, 40, -5, 500), 400, 300) == (0.0, 40.0, 350.0, 300.0)


def test_florence_text_to_pixel_regions(florence: VLM) -> None:
    text = "<s>a man<loc_25><loc_66><loc_500><loc_500>a dog<loc_0><loc_0><loc_999><loc_999></s>"
    regions = florence.florence_regions(text, DENSE_REGION_CAPTION, (400, 300))
    # the processor truncates bin centres to integers: 10.2 -> 10, 19.95 -> 19, 399.8 -> 399, 299.85 -> 299
    assert regions == [
        RegionText(box=(10.0, 19.0, 200.0, 150.0), text="a man"),
        RegionText(box=(0.0, 0.0, 399.0, 299.0), text="a dog"),
    ]
    grounded = florence.florence_regions(
        "<s>a horse<loc_500><loc_500><loc_25><loc_66><loc_0><loc_0><loc_1><loc_1></s>", PHRASE_GROUNDING, (400, 300)
    )
    # two boxes for one phrase; the reversed corners come back ordered
    assert grounded == [
        RegionText(box=(10.0, 19.0, 200.0, 150.0), text="a horse"),
        RegionText(box=(0.0, 0.0, 0.0, 0.0), text="a horse"),
    ]


def _expected_boxes(raw: str, size: tuple[int, int]) -> set[tuple[float, ...]]:
    """Every run of four consecutive <loc_> tokens of ``raw`` (overlapping runs included), converted by hand
    to an ordered, truncated pixel box."""
    boxes = set()
    for quad in re.findall(r"(?=<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>)", raw):
        x1, y1, x2, y2 = (int(v) for v in loc_bins_to_box([int(q) for q in quad], size))
        boxes.add((float(min(x1, x2)), float(min(y1, y2)), float(max(x1, x2)), float(max(y1, y2))))
    return boxes


def test_dense_region_captions_in_pixels(florence: VLM) -> None:
    images = _images()
    regions = florence.dense_region_captions(images, max_new_tokens=32)
    raw = florence.generate(images, DENSE_REGION_CAPTION, max_new_tokens=32)
    assert len(regions) == 2
    assert sum(len(r) for r in regions) > 0  # the tiny model is built to emit coordinate runs
    for per_image, image, gen in zip(regions, images, raw, strict=True):
        width, height = Image.fromarray(image).size if isinstance(image, np.ndarray) else image.size
        expected = _expected_boxes(gen.text, (width, height))
        for region in per_image:
            x1, y1, x2, y2 = region.box
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert region.box in expected
            assert isinstance(region.text, str)


def test_region_description_one_text_per_box(florence: VLM) -> None:
    image = _images()[1]
    texts = florence.region_description(image, [(10, 20, 100, 150), (0, 0, 150, 200)], max_new_tokens=8)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert florence.region_description(image, []) == []


def test_phrase_grounding_boxes_inside_the_image(florence: VLM) -> None:
    image = _images()[0]
    regions = florence.phrase_grounding(image, "a man and a dog", max_new_tokens=32)
    assert regions  # the tiny model emits coordinate runs
    for region in regions:
        x1, y1, x2, y2 = region.box
        assert 0 <= x1 <= x2 <= 400 and 0 <= y1 <= y2 <= 300


# ---------------------------------------------------------------------- Kosmos-2


def test_kosmos_boxes_scaled_to_pixels() -> None:
    # the processor's documented example entity, on a 640x480 image
    entities = [("a snowman", (12, 21), [(0.390625, 0.046875, 0.984375, 0.828125)])]
    assert kosmos_entities_to_pixels(entities, (640, 480)) == [("a snowman", (12, 21), [(250.0, 22.5, 630.0, 397.5)])]


def test_kosmos_grounded_captions(tiny_dir: Path) -> None:
    vlm = _vlm(tiny_dir, "kosmos2")
    out = vlm.grounded_captions(_images(), max_new_tokens=6)
    assert len(out) == 2
    for item in out:
        assert isinstance(item, GroundedCaption)
        assert item.caption.startswith("An image of")
