"""SAM 3 text-prompted detection (family ``sam3``): transformers' ``Sam3Model`` + ``Sam3Processor``.

SAM 3 (``facebook/sam3``) finds every instance of a short noun phrase in an image. It serves the open-vocabulary
detector slots with the same API as OWL and Grounding DINO (:class:`~grand_engine.models.open_vocab.OpenVocabDetector`):
each query string is one prompt. The image is encoded once; its features are shared by all of its prompts, which go
through the fusion encoder and decoder ``batch_size`` at a time; each distinct prompt's text features are computed
once per adapter (a fixed vocabulary once in all). A box's score is SAM 3's ``sigmoid(logit) · sigmoid(presence)``
(the processor's rule); boxes come back in original-image pixels. The processor stretches every image to 1008×1008,
so normalised boxes are per axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grand_engine.models.base import hf_load_kwargs
from grand_engine.models.imaging import CHANNELS_LAST, Detections, check_images, chunks, clip_boxes
from grand_engine.models.open_vocab import CACHE_LIMIT, OpenVocabDetector

TEXT_LENGTH = 32
"""SAM 3's text encoder reads 32 tokens (its processor pads every prompt to that length)."""


class Sam3Detector(OpenVocabDetector):
    """SAM 3 as an open-vocabulary box detector. ``spec.options``: ``batch_size`` (prompts per forward, default 16)."""

    family = "sam3"
    batch_size: int = 16

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import Sam3Model, Sam3Processor

        kwargs = hf_load_kwargs(self.spec)
        self.processor = Sam3Processor.from_pretrained(self.model_path, **kwargs)
        model = Sam3Model.from_pretrained(self.model_path, dtype=self.dtype, **kwargs)
        self.model = model.to(self.device).eval()
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))
        self._text_cache: dict[str, tuple[Any, Any]] = {}
        self.vocabulary: list[str] = []

    def text_features(self, queries: Sequence[str]) -> list[tuple[Any, Any]]:
        """``(features (T, D), mask (T,))`` of each query; each distinct string is encoded once per adapter."""
        # torch is heavy: imported on first use
        import torch

        missing = [q for q in dict.fromkeys(queries) if q not in self._text_cache]
        if len(self._text_cache) + len(missing) > CACHE_LIMIT:
            self._text_cache = {q: self._text_cache[q] for q in self.vocabulary if q in self._text_cache}
        with torch.inference_mode():
            for _, part in chunks(missing, 64):
                tokens = self.processor.tokenizer(
                    list(part), padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
                ).to(self.device)
                out = self.model.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                )
                for k, q in enumerate(part):
                    self._text_cache[q] = (out.pooler_output[k], tokens["attention_mask"][k])
        return [self._text_cache[q] for q in queries]

    def set_vocabulary(self, names: Sequence[str]) -> None:
        self.vocabulary = [str(n) for n in names]
        self.text_features(self.vocabulary)

    def _detect_one(self, image: np.ndarray, queries: list[str], threshold: float) -> Detections:
        # torch and transformers are heavy: imported on first use
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        if not queries:
            return Detections()
        h, w = image.shape[:2]
        pixels = self.processor(images=[image], return_tensors="pt", input_data_format=CHANNELS_LAST)[
            "pixel_values"
        ].to(self.device, self.model.dtype)
        vision = self.model.get_vision_features(pixel_values=pixels)
        parts = []
        for start, part in chunks(list(range(len(queries))), self.batch_size):
            feats = self.text_features([queries[j] for j in part])
            n = len(part)
            repeated = type(vision)(
                fpn_hidden_states=tuple(t.expand(n, *t.shape[1:]) for t in vision.fpn_hidden_states),
                fpn_position_encoding=tuple(t.expand(n, *t.shape[1:]) for t in vision.fpn_position_encoding),
            )
            text = BaseModelOutputWithPooling(pooler_output=torch.stack([f for f, _ in feats]))
            out = self.model(
                vision_embeds=repeated, text_embeds=text, attention_mask=torch.stack([m for _, m in feats])
            )
            results = self.processor.post_process_object_detection(out, threshold=-1.0, target_sizes=[(h, w)] * n)
            for offset, res in enumerate(results):
                scores = res["scores"].float().cpu().numpy().astype(np.float32)
                keep = scores >= threshold
                boxes = clip_boxes(res["boxes"].float().cpu().numpy()[keep], h, w)
                qid = start + offset
                parts.append(
                    Detections(boxes, scores[keep], [queries[qid]] * int(keep.sum()), np.full(int(keep.sum()), qid))
                )
        return Detections.concat(parts)

    def detect(
        self, images: list[np.ndarray], queries_per_image: Sequence[Sequence[str]], threshold: float = 0.05
    ) -> list[Detections]:
        # torch is heavy: imported on first use
        import torch

        images = check_images(images)
        queries = self._check_queries(images, queries_per_image)
        with torch.inference_mode():
            return [self._detect_one(im, q, threshold) for im, q in zip(images, queries, strict=True)]

    def detect_vocabulary(self, images: list[np.ndarray], threshold: float = 0.05) -> list[Detections]:
        if not self.vocabulary:
            raise RuntimeError("call set_vocabulary(names) before detect_vocabulary")
        return self.detect(images, [self.vocabulary] * len(images), threshold)
