"""Image/text embeddings: open_clip (family ``clip``, incl. EVA02-CLIP) and transformers dual encoders (family
``hf_clip``: SigLIP 2, SigLIP, CLIP).

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

from grand_engine.models.base import Adapter, compile_module, hf_load_kwargs, looks_local, strip_scheme
from grand_engine.models.imaging import CHANNELS_LAST, check_images, chunks
from grand_engine.models.pooling import Region, attention_pool, region_weights

LOGIT_SCALE = 100.0
"""CLIP's trained logit scale (EVA-CLIP label assignment uses softmax(100 · cos))."""

TEXT_CACHE_LIMIT = 100_000
"""Text embeddings kept per adapter before the cache is emptied."""


def open_clip_name(model_id: str) -> str:
    """The name handed to open_clip: ``hf-hub:``/``local-dir:`` kept, a local path becomes ``local-dir:``, another
    ``org/name`` becomes ``hf-hub:org/name``; a name without a slash is one of open_clip's built-in models."""
    if model_id.startswith(("hf-hub:", "local-dir:")):
        if model_id.startswith("local-dir:"):
            return "local-dir:" + str(Path(strip_scheme(model_id)).expanduser())
        return model_id
    if looks_local(model_id):
        return "local-dir:" + str(Path(model_id).expanduser())
    if "/" in model_id:  # an ``org/name`` Hub id (e.g. a manifest's ``${mirror}org/name`` with no mirror set)
        return "hf-hub:" + model_id
    return model_id


def _precision(dtype: Any) -> str:
    # torch is heavy: imported on first use
    import torch

    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


class ImageTextEmbedder(Adapter):
    """What the CLIP-style families share: a bounded per-adapter text cache, label scoring and batching. A subclass
    loads its model and implements :meth:`_embed_images` and :meth:`_embed_texts` (one batch, L2-normalised)."""

    batch_size: int = 64

    def _setup_common(self) -> None:
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))
        self._text_cache: dict[str, np.ndarray] = {}

    def _embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        return len(self.encode_texts(["a"])[0])

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)`` float32 of RGB crops of any size."""
        # torch is heavy: imported on first use
        import torch

        images = check_images(images)
        with torch.inference_mode():
            parts = [self._embed_images(part) for _, part in chunks(images, self.batch_size)]
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
                for t, e in zip(part, self._embed_texts(list(part)), strict=True):
                    self._text_cache[t] = np.asarray(e, dtype=np.float32)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.stack([self._text_cache[t] for t in texts])

    def encode_regions(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[Region]]) -> list[np.ndarray]:
        """Region embeddings pooled from one pass over each image; only families with an attention-pooling head
        (``hf_clip`` with SigLIP) have them."""
        raise ValueError(
            f"model {self.spec.id!r} (family {self.family}) cannot pool regions from one image pass: it needs "
            f"SigLIP's attention-pooling head (family hf_clip); use mode 'crops'"
        )

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


class ClipAdapter(ImageTextEmbedder):
    """open_clip model + tokenizer + eval preprocessing."""

    family = "clip"

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
        self._setup_common()

    @property
    def embed_dim(self) -> int:
        if hasattr(self.model, "text_projection"):
            return int(self.model.text_projection.shape[-1])
        return super().embed_dim

    def _embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        # torch is heavy: imported on first use
        import torch

        x = torch.stack([self.preprocess(Image.fromarray(im)) for im in images])
        x = x.to(self.device, dtype=next(self.model.parameters()).dtype)
        return self.model.encode_image(x, normalize=True).float().cpu().numpy()

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()


class HFClipAdapter(ImageTextEmbedder):
    """Dual-encoder image-text models through transformers (family ``hf_clip``): SigLIP 2
    (``google/siglip2-*``, fixed-resolution and NaFlex), SigLIP, CLIP, loaded with ``AutoModel`` +
    ``AutoProcessor`` from a Hub id or a local folder.

    Texts are padded to the text tower's full length (``max_position_embeddings``: 64 for SigLIP, 77 for CLIP), as
    SigLIP was trained; images go through the checkpoint's own processor. Scores are ``softmax(100 · cos)`` like the
    ``clip`` family, so the stages' label rules do not depend on the family (for SigLIP this ranks labels exactly
    as its sigmoid scores do)."""

    family = "hf_clip"

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import AutoModel, AutoProcessor

        kwargs = hf_load_kwargs(self.spec)
        self.processor = AutoProcessor.from_pretrained(self.model_path, **kwargs)
        model = AutoModel.from_pretrained(self.model_path, dtype=self.dtype, **kwargs)
        self.model = model.to(self.device).eval()
        self.model.vision_model = compile_module(self.model.vision_model, self.spec)
        self.text_length = int(self.model.config.text_config.max_position_embeddings)
        self._setup_common()

    def _features(self, out: Any) -> np.ndarray:
        # torch is heavy: imported on first use
        import torch

        embeds = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy()

    def _embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        inputs = self.processor(images=list(images), return_tensors="pt", input_data_format=CHANNELS_LAST).to(
            self.device
        )
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return self._features(self.model.get_image_features(**inputs))

    def encode_regions(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[Region]]) -> list[np.ndarray]:
        """L2-normalised embeddings of regions, pooled from one pass over each whole image (``mode: pooled`` of the
        crop classifiers, :mod:`grand_engine.models.pooling`): per image a float32 ``(R, D)`` array for its regions,
        each an xyxy pixel box or an ``H×W`` boolean mask. Needs a fixed-resolution processor (the whole image
        stretched, no crop) and SigLIP's attention-pooling head."""
        # torch is heavy: imported on first use
        import torch

        images = check_images(images)
        if len(images) != len(regions):
            raise ValueError(f"got {len(images)} images but {len(regions)} region lists")
        tower = getattr(self.model, "vision_model", None)
        if tower is None or getattr(tower, "head", None) is None:
            raise ValueError(f"model {self.spec.id!r} has no attention-pooling head (SigLIP's): use mode 'crops'")
        resized, patch = self._stretch_geometry()
        out: list[np.ndarray] = [np.zeros((0, self.embed_dim), np.float32)] * len(images)
        todo = [i for i, r in enumerate(regions) if len(r)]
        with torch.inference_mode():
            for _, part in chunks(todo, self.batch_size):
                inputs = self.processor(
                    images=[images[i] for i in part], return_tensors="pt", input_data_format=CHANNELS_LAST
                ).to(self.device)
                hidden = tower(pixel_values=inputs["pixel_values"].to(self.model.dtype)).last_hidden_state
                for row, i in enumerate(part):
                    h, w = images[i].shape[:2]
                    weights = torch.as_tensor(region_weights(regions[i], h, w, resized, patch))
                    if weights.shape[1] != hidden.shape[1]:
                        raise ValueError(f"{hidden.shape[1]} patch tokens, but a {resized} grid of {patch} px")
                    out[i] = self._features(attention_pool(tower.head, hidden[row], weights))
        return out

    def _stretch_geometry(self) -> tuple[tuple[int, int], int]:
        """``((height, width), patch)`` of the processor's stretched input, or ``ValueError`` when the processor
        crops or keeps the aspect ratio (the patch grid would not map linearly onto the whole image)."""
        ip = self.processor.image_processor
        size = dict(getattr(ip, "size", None) or {})
        if "height" not in size or "width" not in size or getattr(ip, "do_center_crop", False):
            raise ValueError(f"model {self.spec.id!r}: pooled regions need a processor that stretches the whole image")
        patch = int(self.model.config.vision_config.patch_size)
        return (int(size["height"]), int(size["width"])), patch

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.processor.tokenizer(
            texts, padding="max_length", max_length=self.text_length, truncation=True, return_tensors="pt"
        ).to(self.device)
        # what the checkpoint's tokenizer returns (SigLIP's returns no attention mask: its text tower reads the padding)
        keep = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return self._features(self.model.get_text_features(**keep))


def softmax_scores(image_embeds: np.ndarray, text_embeds: np.ndarray, scale: float = LOGIT_SCALE) -> np.ndarray:
    """Row-wise softmax of ``scale · image_embeds @ text_embeds.T`` (inputs L2-normalised)."""
    logits = scale * (image_embeds.astype(np.float64) @ text_embeds.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
