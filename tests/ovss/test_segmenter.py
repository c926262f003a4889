"""The full CASS forward on tiny random CLIP and DINO backbones: shapes, sizes, windows, determinism, vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.dino import DinoAdapter
from grand_engine.ovss import (
    CassConfig,
    CassSegmenter,
    ovss_vocabulary,
    regions_from_segmentation,
    stuff_name,
    stuff_vocabulary,
)

VOCAB = ("dog", "sky", "grass", "road")


@pytest.fixture(scope="module")
def backbones(cass_checkpoints: tuple[Path, Path]):
    clip = load_adapter(ModelSpec(id=str(cass_checkpoints[0]), family="clip"))
    dino = load_adapter(ModelSpec(id=str(cass_checkpoints[1]), family="dino"))
    return clip, dino


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("height,width", [(37, 53), (53, 37)])
def test_label_map_has_the_image_size_for_odd_non_square_images(backbones, height: int, width: int) -> None:
    segmenter = CassSegmenter(*backbones, CassConfig(short_side=224))
    out = segmenter.segment(image(height, width), VOCAB)
    assert out.labels.shape == (height, width) and out.labels.dtype == np.int32
    assert out.scores.shape == (height, width) and out.scores.dtype == np.float32
    assert out.labels.min() >= 0 and out.labels.max() < len(VOCAB)
    assert (out.scores > 0).all() and (out.scores <= 1 + 1e-6).all()
    # the best of 4 classes has at least a quarter of the probability
    assert out.scores.min() >= 0.25 - 1e-6
    assert out.vocabulary == VOCAB
    assert out.presence.shape == (4,) and out.presence.sum() == pytest.approx(1.0, abs=1e-5)
    # short side 224 = one window across it; the long side 321 needs two (0 and 97, flush with the border)
    long_windows = [(0, 0), (0, 97)] if height < width else [(0, 0), (97, 0)]
    assert out.resized == ((224, 321) if height < width else (321, 224))
    assert out.windows == long_windows


def test_windows_tile_both_axes_and_the_output_is_deterministic(backbones) -> None:
    segmenter = CassSegmenter(*backbones, CassConfig(short_side=256, window_batch=4))
    picture = image(30, 41, seed=1)
    out = segmenter.segment(picture, VOCAB)
    # 256 x 350: rows start at 0, 32; columns at 0, 112, 126 (224-pixel windows, stride 112)
    assert out.resized == (256, 350)
    assert out.windows == [(0, 0), (0, 112), (0, 126), (32, 0), (32, 112), (32, 126)]
    again = segmenter.segment(picture, VOCAB)
    np.testing.assert_array_equal(out.labels, again.labels)
    np.testing.assert_allclose(out.scores, again.scores, rtol=1e-5, atol=1e-6)
    # the regions of the label map partition the image
    regions = regions_from_segmentation(out.labels, out.scores, out.vocabulary, {"sky", "grass", "road"})
    assert sum(r.area for r in regions) == 30 * 41


def test_load_builds_both_backbones_through_the_model_registry(cass_checkpoints: tuple[Path, Path]) -> None:
    clip_dir, dino_dir = cass_checkpoints
    segmenter = CassSegmenter.load(
        ModelSpec(id=f"local-dir:{clip_dir}", family="clip"),
        ModelSpec(id=str(dino_dir), family="dino"),
        CassConfig(short_side=224),
    )
    assert isinstance(segmenter.vfm, DinoAdapter) and segmenter.window == 224 and segmenter.stride == 112
    assert segmenter.segment(image(20, 30), ["sky", "road"]).labels.shape == (20, 30)


def test_single_class_vocabulary_labels_everything(backbones) -> None:
    out = CassSegmenter(*backbones, CassConfig(short_side=224)).segment(image(24, 24), ["sky"])
    assert (out.labels == 0).all()
    np.testing.assert_allclose(out.scores, 1.0, rtol=1e-5)


def test_text_embeddings_average_the_templates(backbones) -> None:
    clip, dino = backbones
    templates = ("a photo of a {}.", "a picture of the {}.")
    segmenter = CassSegmenter(clip, dino, CassConfig(templates=templates))
    got = segmenter.text_embeddings(["sky", "road"])
    raw = clip.encode_texts([t.replace("{}", "sky") for t in templates])
    expected = raw.mean(0) / np.linalg.norm(raw.mean(0))
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (2, clip.embed_dim)


def test_bad_vocabularies_and_configs_are_clear_errors(backbones) -> None:
    segmenter = CassSegmenter(*backbones, CassConfig(short_side=224))
    with pytest.raises(ValueError, match="vocabulary is empty"):
        segmenter.segment(image(30, 30), [])
    with pytest.raises(ValueError, match="repeated"):
        segmenter.segment(image(30, 30), ["sky", "sky"])
    with pytest.raises(ValueError, match="non-blank"):
        segmenter.segment(image(30, 30), ["sky", " "])
    with pytest.raises(ValueError, match="H×W×3"):
        segmenter.segment(np.zeros((30, 30), dtype=np.uint8), ["sky"])
    with pytest.raises(ValueError, match="short_side 200 is smaller than the window 224"):
        CassSegmenter(*backbones, CassConfig(short_side=200))
    with pytest.raises(ValueError, match="stride 300 is larger"):
        CassSegmenter(*backbones, CassConfig(stride=300))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"energy": 0.0}, "energy"),
        ({"templates": ("a photo",)}, "templates"),
        ({"presence_weight": 1.5}, "presence_weight"),
        ({"attention_temperature": 0.0}, "attention_temperature"),
        ({"short_side": 0}, "short_side"),
        ({"window": True}, "window"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CassConfig(**kwargs)


def test_stuff_names_and_vocabulary() -> None:
    assert stuff_name("sky-other") == "sky"
    assert stuff_name("desk-stuff") == "desk"
    assert stuff_name("wall-brick") == "wall brick"
    assert stuff_name("playingfield") == "playingfield"
    stuff = stuff_vocabulary()
    assert len(stuff) == 91  # COCO-Stuff's 91 stuff classes stay distinct after renaming
    assert {"sky", "grass", "road", "wall", "water", "sea", "tree"} <= set(stuff)
    assert ovss_vocabulary(["Dog", "sky", "traffic_light", ""], ["sky", "grass"]) == (
        "dog",
        "sky",
        "traffic light",
        "grass",
    )
