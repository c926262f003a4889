"""Open-vocabulary detection and phrase grounding: OWL-ViT / OWLv2 (family ``owl``) and Grounding DINO /
MM-Grounding-DINO (family ``grounding_dino``).

Both detect boxes for free-text queries. ``detect(images, queries_per_image, threshold)`` takes one
query list per image; a fixed vocabulary (e.g. the 1,203 LVIS names) is prepared once with
``set_vocabulary(names)`` and reused by ``detect_vocabulary(images, threshold)``:

* OWL: the text tower runs once per query string (cached); images go through the vision tower and the
  box/class heads, and each box takes its best-scoring query (sigmoid of the max logit, as the reference).
  OWLv2 pads every image to a square (bottom/right) before resizing, so its normalised boxes refer to
  the padded square of side ``max(h, w)``; OWL-ViT stretches the image, so its boxes refer to ``(w, h)``.
* Grounding DINO: the queries become one prompt ``"a. b. c."``; each label's character span is mapped
  to token positions with the tokenizer's ``char_to_token`` and a box's score for a label is the mean
  sigmoid over those tokens (the label-normalised positive map of the original model). Prompts longer
  than the model's text limit (256 tokens) are split into chunks of whole labels and the detections of
  all chunks are merged.

``GroundingDinoDetector.ground_phrases`` grounds character spans of a caption (noun phrases) to the
best box per phrase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grand_engine.models.base import Adapter, hf_load_kwargs
from grand_engine.models.imaging import (
    CHANNELS_LAST,
    Detections,
    check_image,
    check_images,
    chunks,
    clip_boxes,
    cxcywh_to_xyxy,
    place,
)

CACHE_LIMIT = 50_000
"""Entries kept in a per-adapter text cache before it is emptied (tags repeat; whole tag lists rarely do)."""


class OpenVocabDetector(Adapter):
    """Shared API of the open-vocabulary families."""

    batch_size: int = 4
    vocabulary: list[str]

    def detect(
        self, images: list[np.ndarray], queries_per_image: Sequence[Sequence[str]], threshold: float = 0.05
    ) -> list[Detections]:
        """Detections per image for that image's own queries (labels are the query strings)."""
        raise NotImplementedError

    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Prepare a fixed vocabulary once (text features / token maps) for :meth:`detect_vocabulary`."""
        raise NotImplementedError

    def detect_vocabulary(self, images: list[np.ndarray], threshold: float = 0.05) -> list[Detections]:
        """Detections per image over the vocabulary set with :meth:`set_vocabulary`."""
        raise NotImplementedError

    def _check_queries(self, images: list[np.ndarray], queries_per_image: Sequence[Sequence[str]]) -> list[list[str]]:
        if len(queries_per_image) != len(images):
            raise ValueError(f"got {len(images)} images but {len(queries_per_image)} query lists")
        out = []
        for i, queries in enumerate(queries_per_image):
            if isinstance(queries, str):
                raise ValueError(f"image {i}: queries must be a list of strings, got one string {queries!r}")
            out.append([str(q) for q in queries])
        return out


# --- OWL-ViT / OWLv2 --------------------------------------------------------------------------------


def owl_boxes_to_image(boxes_cxcywh: np.ndarray, height: int, width: int, pads_to_square: bool) -> np.ndarray:
    """Map OWL's normalised ``cxcywh`` boxes to ``xyxy`` pixels of the original ``height×width`` image.

    OWLv2 pads the image to a ``max(h, w)`` square at the bottom/right, so both axes scale by the square
    side; OWL-ViT resizes without padding, so x scales by ``width`` and y by ``height``. Boxes are clipped
    to the image (a box reaching into the padding ends at the image border).
    """
    xyxy = cxcywh_to_xyxy(boxes_cxcywh)
    if pads_to_square:
        side = float(max(height, width))
        scale = np.array([side, side, side, side], dtype=np.float32)
    else:
        scale = np.array([width, height, width, height], dtype=np.float32)
    return clip_boxes(xyxy * scale, height, width)


class OwlDetector(OpenVocabDetector):
    """OWL-ViT and OWLv2 (``AutoModelForZeroShotObjectDetection``)."""

    family = "owl"
    text_batch_size: int = 256

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        kwargs = hf_load_kwargs(self.spec)
        self.processor = AutoProcessor.from_pretrained(self.model_path, **kwargs)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(self.model_path, **kwargs)
        self.model = place(model, self.device, self.dtype)
        self.base = getattr(self.model, self.model.base_model_prefix)
        self.pads_to_square = self.model.config.model_type == "owlv2"
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))
        tokenizer = self.processor.tokenizer
        limit = self.model.config.text_config.max_position_embeddings
        self.max_text_tokens = min(int(tokenizer.model_max_length), int(limit))
        self._text_cache: dict[str, Any] = {}
        self.vocabulary = []
        self._vocab_embeds = None

    # text side -------------------------------------------------------------------------------------

    def text_embeddings(self, queries: Sequence[str]):
        """``(len(queries), D)`` query embeddings; each distinct string is encoded once per adapter."""
        # torch is heavy: imported on first use
        import torch

        missing = [q for q in dict.fromkeys(queries) if q not in self._text_cache]
        if len(self._text_cache) + len(missing) > CACHE_LIMIT:
            self._text_cache.clear()  # bounded memory; the fixed vocabulary is kept separately
            missing = list(dict.fromkeys(queries))
        with torch.inference_mode():
            for _, part in chunks(missing, self.text_batch_size):
                tokens = self.processor.tokenizer(
                    list(part),
                    padding="max_length",
                    truncation=True,
                    max_length=self.max_text_tokens,
                    return_tensors="pt",
                ).to(self.device)
                out = self.base.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                )
                embeds = out.pooler_output if hasattr(out, "pooler_output") else out
                for q, e in zip(part, embeds, strict=True):
                    self._text_cache[q] = e
        if not queries:
            dim = self.model.config.text_config.hidden_size
            return torch.zeros((0, dim), device=self.device, dtype=self.model.dtype)
        return torch.stack([self._text_cache[q] for q in queries])

    def set_vocabulary(self, names: Sequence[str]) -> None:
        self.vocabulary = [str(n) for n in names]
        self._vocab_embeds = self.text_embeddings(self.vocabulary)

    # image side ------------------------------------------------------------------------------------

    def _image_heads(self, images: Sequence[np.ndarray]):
        """Per-patch image features and normalised ``cxcywh`` boxes for a batch."""
        pixel_values = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST
        )["pixel_values"]
        pixel_values = pixel_values.to(self.device, dtype=self.model.dtype)
        feature_map = self.model.image_embedder(pixel_values=pixel_values)[0]
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        boxes = self.model.box_predictor(feats, feature_map)
        return feats, boxes

    def _detect(
        self, images: list[np.ndarray], per_image: list[tuple[list[str], Any]], threshold: float
    ) -> list[Detections]:
        # torch is heavy: imported on first use
        import torch

        out: list[Detections] = []
        with torch.inference_mode():
            for start, part in chunks(images, self.batch_size):
                feats, boxes = self._image_heads(part)
                for row, image in enumerate(part):
                    labels, embeds = per_image[start + row]
                    if not labels:
                        out.append(Detections())
                        continue
                    logits = self.model.class_predictor(feats[row : row + 1], embeds[None], None)[0][0].float()
                    best, idx = logits.max(dim=-1)
                    scores = torch.sigmoid(best)
                    keep = (scores >= threshold).nonzero().flatten()
                    h, w = image.shape[:2]
                    xyxy = owl_boxes_to_image(boxes[row][keep].float().cpu().numpy(), h, w, self.pads_to_square)
                    ids = idx[keep].cpu().numpy().astype(np.int64)
                    out.append(
                        Detections(
                            boxes=xyxy,
                            scores=scores[keep].cpu().numpy().astype(np.float32),
                            labels=[labels[i] for i in ids],
                            label_ids=ids,
                        )
                    )
        return out

    def detect(
        self, images: list[np.ndarray], queries_per_image: Sequence[Sequence[str]], threshold: float = 0.05
    ) -> list[Detections]:
        images = check_images(images)
        queries = self._check_queries(images, queries_per_image)
        per_image = [(q, self.text_embeddings(q)) for q in queries]
        return self._detect(images, per_image, threshold)

    def detect_vocabulary(self, images: list[np.ndarray], threshold: float = 0.05) -> list[Detections]:
        if self._vocab_embeds is None:
            raise RuntimeError("call set_vocabulary(names) before detect_vocabulary")
        images = check_images(images)
        return self._detect(images, [(self.vocabulary, self._vocab_embeds)] * len(images), threshold)


# --- Grounding DINO ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptChunk:
    """One Grounding DINO prompt: ``text`` (``"a. b."``), its labels and each label's token positions."""

    text: str
    labels: tuple[str, ...]
    label_ids: tuple[int, ...]  # index of each label in the caller's query list
    token_positions: tuple[tuple[int, ...], ...]


def span_token_positions(encoding: Any, start: int, end: int, limit: int | None = None) -> list[int]:
    """Token positions covering characters ``[start, end)`` of the encoded text (position 0 is [CLS]).

    Uses the fast tokenizer's ``char_to_token``; whitespace maps to no token and is skipped. Positions at
    or beyond ``limit`` (the model's text length) are dropped.
    """
    positions = set()
    for c in range(start, end):
        t = encoding.char_to_token(c)
        if t is not None and (limit is None or t < limit):
            positions.add(t)
    return sorted(positions)


def build_prompt_chunks(tokenizer: Any, labels: Sequence[str], max_tokens: int) -> list[PromptChunk]:
    """Split ``labels`` into prompts ``"l1. l2. …"`` of at most ``max_tokens`` tokens (incl. [CLS]/[SEP]).

    Labels are lower-cased and stripped (as Grounding DINO's processor does) and never split across
    chunks; a single label longer than the limit gets a chunk of its own and is truncated.
    """
    cleaned = [" ".join(str(label).lower().split()) for label in labels]
    lengths = [len(tokenizer(label, add_special_tokens=False)["input_ids"]) + 1 for label in cleaned]  # +1: "."
    groups: list[list[int]] = []
    used = 2  # [CLS] and [SEP]
    for i, n in enumerate(lengths):
        if not cleaned[i]:
            continue
        if groups and used + n <= max_tokens:
            groups[-1].append(i)
            used += n
        else:
            groups.append([i])
            used = 2 + n
    out = []
    for group in groups:
        spans, text = [], ""
        for i in group:
            if text:
                text += " "
            spans.append((len(text), len(text) + len(cleaned[i])))
            text += cleaned[i] + "."
        enc = tokenizer(text)
        positions = tuple(tuple(span_token_positions(enc, s, e, max_tokens)) for s, e in spans)
        out.append(PromptChunk(text, tuple(cleaned[i] for i in group), tuple(group), positions))
    return out


def label_scores(probs: Any, token_positions: Sequence[Sequence[int]]) -> Any:
    """``(Q, L)`` score of every query box for every label: mean of ``probs[:, tokens]`` over the label's
    tokens (0 for a label with no token)."""
    # torch is heavy: imported on first use
    import torch

    cols = []
    for tokens in token_positions:
        if tokens:
            cols.append(probs[:, list(tokens)].mean(dim=-1))
        else:
            cols.append(torch.zeros(probs.shape[0], device=probs.device, dtype=probs.dtype))
    return torch.stack(cols, dim=-1)


class GroundingDinoDetector(OpenVocabDetector):
    """Grounding DINO and MM-Grounding-DINO (``AutoModelForZeroShotObjectDetection``)."""

    family = "grounding_dino"

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        kwargs = hf_load_kwargs(self.spec)
        self.processor = AutoProcessor.from_pretrained(self.model_path, **kwargs)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(self.model_path, **kwargs)
        self.model = place(model, self.device, self.dtype)
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))
        self.max_text_len = int(self.model.config.max_text_len)
        self._chunk_cache: dict[tuple[int | str, ...], list[PromptChunk]] = {}
        self.vocabulary = []
        self._vocab_chunks: list[PromptChunk] | None = None

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def prompt_chunks(self, labels: Sequence[str]) -> list[PromptChunk]:
        key = (self.max_text_len, *labels)
        if key not in self._chunk_cache:
            if len(self._chunk_cache) >= CACHE_LIMIT:
                self._chunk_cache.clear()  # per-image tag lists are mostly unique: keep memory bounded
            self._chunk_cache[key] = build_prompt_chunks(self.tokenizer, labels, self.max_text_len)
        return self._chunk_cache[key]

    def set_vocabulary(self, names: Sequence[str]) -> None:
        self.vocabulary = [str(n) for n in names]
        self._vocab_chunks = build_prompt_chunks(self.tokenizer, self.vocabulary, self.max_text_len)

    def _forward(self, images: Sequence[np.ndarray], texts: Sequence[str]):
        """Sigmoid token scores ``(B, Q, T)`` and normalised ``cxcywh`` boxes ``(B, Q, 4)``."""
        # torch is heavy: imported on first use
        import torch

        with torch.inference_mode():
            return self._forward_inner(images, texts)

    def _forward_inner(self, images: Sequence[np.ndarray], texts: Sequence[str]):
        inputs = self.processor(
            images=list(images),
            text=list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_text_len,
            return_tensors="pt",
            input_data_format=CHANNELS_LAST,
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model(**inputs)
        return out.logits.float().sigmoid(), out.pred_boxes.float()

    def _run(
        self,
        images: list[np.ndarray],
        labels_per_image: list[list[str]],
        chunks_per_image: list[list[PromptChunk]],
        threshold: float,
    ) -> list[Detections]:
        # torch is heavy: imported on first use
        import torch

        jobs = [(i, c) for i, cs in enumerate(chunks_per_image) for c in cs]
        parts: list[list[Detections]] = [[] for _ in images]
        with torch.inference_mode():
            for _, batch in chunks(jobs, self.batch_size):
                probs, boxes = self._forward([images[i] for i, _ in batch], [c.text for _, c in batch])
                for row, (i, chunk) in enumerate(batch):
                    scores_ql = label_scores(probs[row], chunk.token_positions)
                    best, which = scores_ql.max(dim=-1)
                    keep = (best >= threshold).nonzero().flatten()
                    h, w = images[i].shape[:2]
                    xyxy = cxcywh_to_xyxy(boxes[row][keep].cpu().numpy()) * np.array([w, h, w, h], np.float32)
                    ids = np.array([chunk.label_ids[j] for j in which[keep].cpu().numpy()], dtype=np.int64)
                    parts[i].append(
                        Detections(
                            boxes=clip_boxes(xyxy, h, w),
                            scores=best[keep].cpu().numpy().astype(np.float32),
                            labels=[labels_per_image[i][j] for j in ids],
                            label_ids=ids,
                        )
                    )
        return [Detections.concat(p) for p in parts]

    def detect(
        self, images: list[np.ndarray], queries_per_image: Sequence[Sequence[str]], threshold: float = 0.05
    ) -> list[Detections]:
        images = check_images(images)
        queries = self._check_queries(images, queries_per_image)
        return self._run(images, queries, [self.prompt_chunks(q) for q in queries], threshold)

    def detect_vocabulary(self, images: list[np.ndarray], threshold: float = 0.05) -> list[Detections]:
        if self._vocab_chunks is None:
            raise RuntimeError("call set_vocabulary(names) before detect_vocabulary")
        images = check_images(images)
        n = len(images)
        return self._run(images, [self.vocabulary] * n, [self._vocab_chunks] * n, threshold)

    def phrase_tokens(self, caption: str, spans: Sequence[tuple[int, int]]) -> list[list[int]]:
        """Token positions of each character span of ``caption`` (see :func:`span_token_positions`)."""
        enc = self.tokenizer(caption)
        return [span_token_positions(enc, int(s), int(e), self.max_text_len) for s, e in spans]

    def ground_phrases(
        self, image: np.ndarray, caption: str, spans: Sequence[tuple[int, int]], threshold: float = 0.0
    ) -> list[tuple[np.ndarray, float] | None]:
        """Best box per phrase span of ``caption``: ``(xyxy float32, score)``, or None when the span maps to
        no token (empty, whitespace, beyond the text limit) or its best score is below ``threshold``.

        A box's score for a phrase is the mean sigmoid over the phrase's tokens.
        """
        # torch is heavy: imported on first use
        import torch

        image = check_image(image)
        for s, e in spans:
            if not 0 <= s <= e <= len(caption):
                raise ValueError(f"span ({s}, {e}) is outside the caption of length {len(caption)}")
        positions = self.phrase_tokens(caption, spans)
        if not any(positions):
            return [None] * len(spans)
        with torch.inference_mode():
            probs, boxes = self._forward([image], [caption])
        h, w = image.shape[:2]
        result: list[tuple[np.ndarray, float] | None] = []
        for tokens in positions:
            if not tokens:
                result.append(None)
                continue
            scores = probs[0][:, tokens].mean(dim=-1)
            best = int(scores.argmax())
            score = float(scores[best])
            if score < threshold:
                result.append(None)
                continue
            xyxy = cxcywh_to_xyxy(boxes[0][best : best + 1].cpu().numpy()) * np.array([w, h, w, h], np.float32)
            result.append((clip_boxes(xyxy, h, w)[0], score))
        return result

    def ground_phrases_batch(
        self, requests: Sequence[tuple[np.ndarray, str, Sequence[tuple[int, int]]]], threshold: float = 0.0
    ) -> list[list[tuple[np.ndarray, float] | None]]:
        """:meth:`ground_phrases` for each ``(image, caption, spans)`` (the grounder interface the stage calls)."""
        return [self.ground_phrases(image, caption, spans, threshold) for image, caption, spans in requests]
