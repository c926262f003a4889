"""CLIP image/text embeddings with open_clip (family ``clip``), incl. EVA02-CLIP.

The model id is an open_clip reference: ``hf-hub:org/repo`` (e.g.
``hf-hub:timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k`` = EVA02-L-14-336 / merged2b_s6b_b61k),
``local-dir:/path`` or a plain local directory (``open_clip_config.json`` + weights), or a built-in
model name with ``options: {pretrained: <tag or file>}``.

Used for zero-shot tagging, crop classification (SA-1B masks) and label choice: ``classify`` returns
``softmax(100 · cos(image, text))`` over the given labels, as the reference's EVA-CLIP step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.models.base import Adapter, looks_local, strip_scheme, tiny_builder
from grand_engine.models.imaging import check_images, chunks, seeded

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
    import torch

    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


class ClipAdapter(Adapter):
    """open_clip model + tokenizer + eval preprocessing."""

    family = "clip"
    batch_size: int = 64

    def load(self) -> None:
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
        import torch
        from PIL import Image

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


# --- tiny checkpoints -------------------------------------------------------------------------------

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def _write_open_clip(dest: Path, model_cfg: dict[str, Any]) -> None:
    """Build an open_clip model from ``model_cfg`` (seeded) and save it in the hub layout open_clip reads."""
    import open_clip
    from safetensors.torch import save_file

    cfg = dict(model_cfg)
    custom_text = cfg.pop("custom_text", False)
    with seeded(0):
        model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg).eval()
    preprocess = {
        "mean": list(_OPENAI_MEAN),
        "std": list(_OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (dest / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n"
    )
    # Stored in float16 (as many released open_clip weights are); load_state_dict casts to the model dtype.
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(dest / "open_clip_model.safetensors"))


@tiny_builder("clip-vit")
def build_tiny_clip_vit(dest: Path) -> None:
    """A 2-layer ViT-B/16-style open_clip model at 224² with the real 49,408-token BPE text vocabulary."""
    _write_open_clip(
        dest,
        {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
            "text_cfg": dict(_TEXT_CFG),
        },
    )


@tiny_builder("clip-eva02")
def build_tiny_clip_eva02(dest: Path) -> None:
    """An EVA02-CLIP-style model: timm ``eva02_tiny_patch14_224`` vision tower + open_clip text tower
    (the layout of ``EVA02-L-14-336``, with the smallest EVA02 timm tower)."""
    _write_open_clip(
        dest,
        {
            "embed_dim": 32,
            "vision_cfg": {
                "image_size": 224,
                "timm_model_name": "eva02_tiny_patch14_224",
                "timm_model_pretrained": False,
                "timm_pool": "token",
                "timm_proj": "linear",
            },
            "text_cfg": dict(_TEXT_CFG),
            "custom_text": True,
        },
    )
