"""Open-vocabulary adapters: OWL-ViT / OWLv2 and Grounding DINO on their tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.imaging import Detections
from grand_engine.models.open_vocab import (
    GroundingDinoDetector,
    OwlDetector,
    build_prompt_chunks,
    owl_boxes_to_image,
    span_token_positions,
)
from grand_engine.models.tiny.tokenizers import bert_tokenizer

QUERIES = [["a cat", "a dog", "trees"], ["a red car"]]


@pytest.fixture(scope="module")
def owlvit(tiny_dir: Path) -> OwlDetector:
    return load_adapter(ModelSpec(id=str(tiny_dir / "owlvit"), family="owl"))


@pytest.fixture(scope="module")
def owlv2(tiny_dir: Path) -> OwlDetector:
    return load_adapter(ModelSpec(id=str(tiny_dir / "owlv2"), family="owl"))


@pytest.fixture(scope="module")
def gdino(tiny_dir: Path) -> GroundingDinoDetector:
    return load_adapter(ModelSpec(id=str(tiny_dir / "grounding-dino"), family="grounding_dino"))


def _assert_inside(det: Detections, image: np.ndarray, queries: list[str]) -> None:
    h, w = image.shape[:2]
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4)
    assert det.scores.dtype == np.float32 and det.label_ids.dtype == np.int64
    assert (det.boxes[:, [0, 2]] >= 0).all() and (det.boxes[:, [0, 2]] <= w).all()
    assert (det.boxes[:, [1, 3]] >= 0).all() and (det.boxes[:, [1, 3]] <= h).all()
    assert (det.boxes[:, 2] >= det.boxes[:, 0]).all() and (det.boxes[:, 3] >= det.boxes[:, 1]).all()
    assert det.labels == [queries[i] for i in det.label_ids]
    assert ((det.scores >= 0) & (det.scores <= 1)).all()


def test_owl_box_mapping_by_hand() -> None:
    # image 300 wide × 200 high; normalised box centre (0.5, 0.25), size (0.2, 0.1)
    box = np.array([[0.5, 0.25, 0.2, 0.1]], dtype=np.float32)
    # OWLv2: the 300×300 padded square is the frame -> centre (150, 75), size (60, 30)
    np.testing.assert_allclose(owl_boxes_to_image(box, 200, 300, True), [[120, 60, 180, 90]], atol=1e-4)
    # OWL-ViT: x by 300, y by 200 -> centre (150, 50), size (60, 20)
    np.testing.assert_allclose(owl_boxes_to_image(box, 200, 300, False), [[120, 40, 180, 60]], atol=1e-4)
    # a box in the padding below the image (y 225..255 of the square) is clipped to the bottom edge
    low = np.array([[0.5, 0.8, 0.2, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(owl_boxes_to_image(low, 200, 300, True), [[120, 200, 180, 200]], atol=1e-4)


@pytest.mark.parametrize("fixture", ["owlvit", "owlv2"])
def test_owl_detect_matches_the_library_forward(
    request: pytest.FixtureRequest, two_images: list[np.ndarray], fixture: str
) -> None:
    adapter: OwlDetector = request.getfixturevalue(fixture)
    assert adapter.pads_to_square == (fixture == "owlv2")
    out = adapter.detect(two_images, QUERIES, threshold=0.0)
    n_patches = (768 // 32) ** 2 if fixture == "owlvit" else (960 // 16) ** 2
    for det, image, queries in zip(out, two_images, QUERIES, strict=True):
        assert len(det) == n_patches
        _assert_inside(det, image, queries)
        # the library's own forward + post-processing on the same inputs gives the same boxes and scores
        h, w = image.shape[:2]
        inputs = adapter.processor(text=[queries], images=image, return_tensors="pt")
        with torch.inference_mode():
            outputs = adapter.model(**inputs)
        side = max(h, w)
        target = (side, side) if adapter.pads_to_square else (h, w)
        ref = adapter.processor.post_process_grounded_object_detection(
            outputs, threshold=-1.0, target_sizes=[target], text_labels=[queries]
        )[0]
        ref_boxes = ref["boxes"].numpy().copy()
        ref_boxes[:, [0, 2]] = ref_boxes[:, [0, 2]].clip(0, w)
        ref_boxes[:, [1, 3]] = ref_boxes[:, [1, 3]].clip(0, h)
        np.testing.assert_allclose(det.boxes, ref_boxes, atol=1e-3)
        np.testing.assert_allclose(det.scores, ref["scores"].numpy(), atol=1e-5)
        assert det.labels == list(ref["text_labels"])


def test_owlv2_padded_frame_maps_back(owlv2: OwlDetector, two_images: list[np.ndarray]) -> None:
    """OWLv2 pads bottom/right with black: the image and its explicitly padded square give identical
    predictions, and the boxes found on the square, cut to the image, are the image's boxes."""
    image = two_images[0]  # 200 high, 300 wide
    square = np.zeros((300, 300, 3), dtype=np.uint8)
    square[:200, :300] = image
    on_image, on_square = owlv2.detect([image, square], [["a cat"], ["a cat"]], threshold=0.0)
    np.testing.assert_allclose(on_image.scores, on_square.scores, atol=1e-5)
    cut = on_square.boxes.copy()
    cut[:, [1, 3]] = cut[:, [1, 3]].clip(0, 200)
    np.testing.assert_allclose(on_image.boxes, cut, atol=1e-3)
    assert (on_square.boxes[:, 3] > 200).any()  # some boxes do reach into the padding


def test_owl_vocabulary_text_features_are_computed_once(
    owlvit: OwlDetector, two_images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = owlvit.base.get_text_features

    def counting(*args, **kwargs):
        calls.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(owlvit.base, "get_text_features", counting)
    names = ["aerosol can", "air conditioner", "airplane", "alarm clock", "alcohol"]
    owlvit.set_vocabulary(names)
    assert sum(calls) == len(names)
    vocab = owlvit.detect_vocabulary(two_images, threshold=0.0)
    again = owlvit.detect_vocabulary(two_images, threshold=0.0)
    per_image = owlvit.detect(two_images, [names, names], threshold=0.0)
    assert sum(calls) == len(names)  # no text encoding after set_vocabulary
    for a, b, c in zip(vocab, again, per_image, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_allclose(a.scores, c.scores, atol=1e-6)
        assert a.labels == c.labels
    # an image with no queries gets no detections; a threshold of 1.01 keeps nothing
    empty = owlvit.detect(two_images, [[], ["a cat"]], threshold=1.01)
    assert len(empty[0]) == 0 and len(empty[1]) == 0
    with pytest.raises(ValueError, match="2 images but 1 query lists"):
        owlvit.detect(two_images, [["a cat"]])


def test_prompt_chunks_by_hand() -> None:
    tokenizer = bert_tokenizer()
    labels = ["cat", "Traffic  light", "dog", "hot dog", "person"]
    # tokens per label incl. its ".": cat 2, traffic light 3, dog 2, hot dog 3, person 2; [CLS]+[SEP] = 2
    chunks = build_prompt_chunks(tokenizer, labels, max_tokens=8)
    assert [c.text for c in chunks] == ["cat. traffic light.", "dog. hot dog.", "person."]
    assert [c.label_ids for c in chunks] == [(0, 1), (2, 3), (4,)]
    # [CLS] cat . traffic light . [SEP]  ->  cat at 1, traffic light at 3-4
    assert [c.token_positions for c in chunks] == [((1,), (3, 4)), ((1,), (3, 4)), ((1,),)]
    for c in chunks:
        ids = tokenizer(c.text)["input_ids"]
        assert len(ids) <= 8
        for label, positions in zip(c.labels, c.token_positions, strict=True):
            assert tokenizer.decode([ids[p] for p in positions]) == label
    # one prompt when everything fits
    assert [c.text for c in build_prompt_chunks(tokenizer, labels, 256)] == [
        "cat. traffic light. dog. hot dog. person."
    ]


def test_phrase_token_mapping_on_a_known_caption(gdino: GroundingDinoDetector) -> None:
    caption = "A man rides a horse next to a red car."
    # [CLS]=0 a=1 man=2 rides=3 a=4 horse=5 next=6 to=7 a=8 red=9 car=10 .=11 [SEP]=12
    spans = [(0, 5), (12, 19), (28, 37), (6, 11), (5, 6)]
    assert caption[0:5] == "A man" and caption[12:19] == "a horse" and caption[28:37] == "a red car"
    assert gdino.phrase_tokens(caption, spans) == [[1, 2], [4, 5], [8, 9, 10], [3], []]
    enc = gdino.tokenizer(caption)
    assert span_token_positions(enc, 28, 37, limit=10) == [8, 9]  # positions past the text limit dropped


def test_ground_phrases(gdino: GroundingDinoDetector, two_images: list[np.ndarray]) -> None:
    caption = "A man rides a horse next to a red car."
    image = two_images[1]
    result = gdino.ground_phrases(image, caption, [(0, 5), (12, 19), (5, 6)])
    assert result[2] is None  # a space maps to no token
    probs, boxes = gdino._forward([image], [caption])
    for (box, score), tokens in zip(result[:2], ([1, 2], [4, 5]), strict=True):
        assert box.dtype == np.float32 and box.shape == (4,)
        assert 0 <= box[0] <= box[2] <= 180 and 0 <= box[1] <= box[3] <= 260
        # the best box is the query with the highest mean probability over the phrase's tokens
        assert score == pytest.approx(float(probs[0][:, tokens].mean(-1).max()), abs=1e-6)
    assert gdino.ground_phrases(image, caption, [(0, 5)], threshold=1.01) == [None]
    with pytest.raises(ValueError, match="outside the caption"):
        gdino.ground_phrases(image, caption, [(0, 99)])


def test_grounding_dino_detect_and_chunk_merge(gdino: GroundingDinoDetector, two_images: list[np.ndarray]) -> None:
    labels = ["cat", "traffic light", "dog", "hot dog", "person"]
    out = gdino.detect(two_images, [labels, ["a red car"]], threshold=0.0)
    assert len(out[0]) == 100 and len(out[1]) == 100  # one prompt each: one box per query (100 queries)
    _assert_inside(out[0], two_images[0], labels)
    _assert_inside(out[1], two_images[1], ["a red car"])
    # with an 8-token text limit the labels need 3 prompts; detections of all of them are merged
    limit = gdino.max_text_len
    gdino.max_text_len = 8
    try:
        merged = gdino.detect(two_images[:1], [labels], threshold=0.0)[0]
    finally:
        gdino.max_text_len = limit
    assert len(merged) == 300
    _assert_inside(merged, two_images[0], labels)
    assert set(merged.label_ids[:100]) <= {0, 1} and set(merged.label_ids[200:]) == {4}
    # a fixed vocabulary gives the same result as passing it per image
    gdino.set_vocabulary(labels)
    vocab = gdino.detect_vocabulary(two_images, threshold=0.0)
    np.testing.assert_allclose(vocab[0].scores, out[0].scores, atol=1e-5)
    np.testing.assert_allclose(vocab[0].boxes, out[0].boxes, atol=1e-3)
    assert vocab[0].labels == out[0].labels
    assert len(vocab[1]) == 100
    _assert_inside(vocab[1], two_images[1], labels)
