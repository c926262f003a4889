"""CLIP image/text embeddings with open_clip (family ``clip``), incl. EVA02-CLIP.

The model id is an open_clip reference: ``hf-hub:org/repo`` (e.g.
``hf-hub:timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k`` = EVA02-L-14-336 / merged2b_s6b_b61k),
``local-dir:/path`` or a plain local directory (``open_clip_config.json`` + weights), or a built-in
model name with ``options: {pretrained: <tag or file>}``.

Used for zero-shot tagging, crop classification (SA-1B masks) and label choice: ``classify`` returns
``softmax(100 · cos(image, text))`` over the given labels, as the reference's EVA-CLIP step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grand_engine.models.base import Adapter, looks_local, strip_scheme
from grand_engine.models.imaging import check_images, chunks

LOGIT_SCALE = 100.0
"""CLIP's trained logit scale (EVA-CLIP label assignment uses softmax(100 · cos))."""

TEXT_CACHE_LIMIT = 100_000
"""Text embeddings kept per adapter before the cache is emptied."""


def open_clip_name(model_id: str) -> str:
    """The name handed to open_clip: ``hf-hub:``/``local-dir:`` kept, a local path becomes ``local-dir:``."""
    if model_id.startswith(("hf-hub:", "local-dir:")):
        if model_id.startswith("local-dir:"):
            return "local-dir:" + str(Path(strip_scheme(model_id)).expanduser())
        return model_id
    if looks_local(model_id):
        return "local-dir:" + str(Path(model_id).expanduser())
    return model_id


def _precision(dtype: Any) -> str:
    # torch is heavy: imported on first use
    import torch

    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


class ClipAdapter(Adapter):
    """open_clip model + tokenizer + eval preprocessing."""

    family = "clip"
    batch_size: int = 64

    def load(self) -> None:
        # open_clip is heavy: imported on first use
        import open_clip

        name = open_clip_name(self.spec.id)
        pretrained = self.spec.options.get("pretrained")
        model, _, preprocess = open_clip.create_model_and_transforms(
            name,
            pretrained=None if name.startswith(("hf-hub:", "local-dir:")) else pretrained,
            device=self.device,
            precision=_precision(self.dtype),
        )
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))
        self._text_cache: dict[str, np.ndarray] = {}

    @property
    def embed_dim(self) -> int:
        return (
            int(self.model.text_projection.shape[-1])
            if hasattr(self.model, "text_projection")
            else len(self.encode_texts(["a"])[0])
        )

    def _dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)`` float32 of RGB crops of any size."""
        # torch is heavy: imported on first use
        import torch

        images = check_images(images)
        parts = []
        with torch.inference_mode():
            for _, part in chunks(images, self.batch_size):
                x = torch.stack([self.preprocess(Image.fromarray(im)) for im in part])
                x = x.to(self.device, dtype=self._dtype())
                parts.append(self.model.encode_image(x, normalize=True).float().cpu().numpy())
        if not parts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings ``(N, D)`` float32; each distinct string is encoded once per adapter."""
        # torch is heavy: imported on first use
        import torch

        texts = [str(t) for t in texts]
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if len(self._text_cache) + len(missing) > TEXT_CACHE_LIMIT:
            self._text_cache.clear()  # bounded memory over long runs
            missing = list(dict.fromkeys(texts))
        with torch.inference_mode():
            for _, part in chunks(missing, self.batch_size * 4):
                tokens = self.tokenizer(list(part)).to(self.device)
                embeds = self.model.encode_text(tokens, normalize=True).float().cpu().numpy()
                for t, e in zip(part, embeds, strict=True):
                    self._text_cache[t] = e.astype(np.float32)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.stack([self._text_cache[t] for t in texts])

    def classify(self, images: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
        """``(N_images, N_labels)`` float32 probabilities: softmax over labels of ``100 · cos``."""
        if not labels:
            raise ValueError("classify needs at least one label")
        return softmax_scores(self.encode_images(images), self.encode_texts(labels))

    def classify_each(
        self, images: Sequence[np.ndarray], labels_per_image: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """Like :meth:`classify`, but each image against its own candidate labels (images encoded in batches)."""
        if len(images) != len(labels_per_image):
            raise ValueError(f"got {len(images)} images but {len(labels_per_image)} label lists")
        for i, labels in enumerate(labels_per_image):
            if not labels:
                raise ValueError(f"image {i}: no candidate labels")
        image_embeds = self.encode_images(images)
        return [
            softmax_scores(image_embeds[i : i + 1], self.encode_texts(labels))[0]
            for i, labels in enumerate(labels_per_image)
        ]


def softmax_scores(image_embeds: np.ndarray, text_embeds: np.ndarray, scale: float = LOGIT_SCALE) -> np.ndarray:
    """Row-wise softmax of ``scale · image_embeds @ text_embeds.T`` (inputs L2-normalised)."""
    logits = scale * (image_embeds.astype(np.float64) @ text_embeds.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
