"""open_clip adapter on the tiny ViT and EVA02 checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.clip import ClipAdapter, open_clip_name, softmax_scores


def test_softmax_scores_by_hand() -> None:
    image = np.array([[1.0, 0.0]], dtype=np.float32)
    texts = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    # cosines 1 and 0; with scale 1: e / (e + 1) and 1 / (e + 1)
    np.testing.assert_allclose(softmax_scores(image, texts, scale=1.0), [[math.e / (math.e + 1), 1 / (math.e + 1)]])
    # with CLIP's scale 100 the first label takes (almost) everything, without overflow
    np.testing.assert_allclose(softmax_scores(image, texts), [[1.0, 0.0]], atol=1e-30)


def test_open_clip_name(tmp_path: Path) -> None:
    assert open_clip_name("hf-hub:timm/x") == "hf-hub:timm/x"
    assert open_clip_name(str(tmp_path)) == f"local-dir:{tmp_path}"
    assert open_clip_name(f"local-dir:{tmp_path}") == f"local-dir:{tmp_path}"
    assert open_clip_name("EVA02-L-14-336") == "EVA02-L-14-336"
    assert open_clip_name("timm/x") == "hf-hub:timm/x"  # a `${mirror}org/name` id with no mirror


@pytest.mark.parametrize("name,prefix", [("clip-vit", ""), ("clip-eva02", "local-dir:")])
def test_encode_and_classify(tiny_dir: Path, two_images: list[np.ndarray], name: str, prefix: str) -> None:
    clip = load_adapter(ModelSpec(id=prefix + str(tiny_dir / name), family="clip"))
    assert isinstance(clip, ClipAdapter)
    assert clip.embed_dim == 32
    images = clip.encode_images(two_images)
    assert images.shape == (2, 32) and images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    labels = ["a cat", "a dog", "a tree"]
    texts = clip.encode_texts(labels)
    assert texts.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    # cached per string: a repeated and a reordered request returns the same vectors without new entries
    cached = len(clip._text_cache)
    np.testing.assert_array_equal(clip.encode_texts(["a tree", "a cat", "a cat"]), texts[[2, 0, 0]])
    assert len(clip._text_cache) == cached
    probs = clip.classify(two_images, labels)
    assert probs.shape == (2, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, softmax_scores(images, texts), atol=1e-5)
    each = clip.classify_each(two_images, [labels, ["a tree", "a dog"]])
    np.testing.assert_allclose(each[0], probs[0], atol=1e-5)
    np.testing.assert_allclose(each[1], softmax_scores(images[1:], texts[[2, 1]])[0], atol=1e-5)
    assert clip.encode_images([]).shape == (0, 32)
    with pytest.raises(ValueError, match="at least one label"):
        clip.classify(two_images, [])
