"""DINO-style ViT features with transformers (family ``dino``): the per-head keys of the last layer.

The model id is a Hub id or a local ``save_pretrained`` directory of a transformers ViT; ``facebook/dino-vitb16``
is ViT-B/16 trained with DINO (Caron et al., ICCV 2021), the vision foundation model CASS distils from. Its last
layer's key-key similarities group the patches of one object, which is what the ``ovss`` stage uses
(:mod:`grand_engine.ovss`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grand_engine.models.base import Adapter, hf_load_kwargs
from grand_engine.models.imaging import IMAGENET_MEAN, IMAGENET_STD, place

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DinoAdapter"]

_KEY_PROJECTIONS = ("attention.k_proj", "attention.attention.key", "attention.key", "attn.k_proj")
"""Where the last layer's key projection sits in a transformers ViT-family layer (the name changed across versions);
the layers themselves are ``model.layers`` (transformers 5) or ``model.encoder.layer`` (transformers 4)."""


class DinoAdapter(Adapter):
    """A transformers ViT exposing its last layer's keys per head on the patch grid."""

    family = "dino"

    def load(self) -> None:
        # transformers is heavy: imported only when a checkpoint is loaded
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTModel

        kwargs = hf_load_kwargs(self.spec)
        config = AutoConfig.from_pretrained(self.model_path, **kwargs)
        if config.model_type == "vit":
            # DINO checkpoints have no pooler; building one would only add random, unused weights
            model = ViTModel.from_pretrained(self.model_path, add_pooling_layer=False, **kwargs)
        else:
            model = AutoModel.from_pretrained(self.model_path, **kwargs)
        self.model = place(model, self.device, self.dtype)
        processor = AutoImageProcessor.from_pretrained(self.model_path, **kwargs)
        self.mean = tuple(float(v) for v in getattr(processor, "image_mean", None) or IMAGENET_MEAN)
        self.std = tuple(float(v) for v in getattr(processor, "image_std", None) or IMAGENET_STD)
        size = config.image_size if isinstance(config.image_size, (list, tuple)) else (config.image_size,) * 2
        patch = config.patch_size if isinstance(config.patch_size, (list, tuple)) else (config.patch_size,) * 2
        self.image_size = (int(size[0]), int(size[1]))
        self.patch_size = (int(patch[0]), int(patch[1]))
        self.grid = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.heads = int(config.num_attention_heads)
        self._key_proj = self._find_key_projection()

    def _find_key_projection(self) -> Any:
        layers = None
        for owner in (self.model, getattr(self.model, "encoder", None)):
            for name in ("layers", "layer"):
                candidate = getattr(owner, name, None) if owner is not None else None
                if candidate is not None and len(candidate) > 0:
                    layers = candidate
                    break
            if layers is not None:
                break
        if layers is None:
            raise ValueError(f"{self.spec.id!r}: no encoder layers found; the 'dino' family needs a ViT-style model")
        self.last_layer = layers[-1]
        for name in _KEY_PROJECTIONS:
            module = self.last_layer
            for part in name.split("."):
                module = getattr(module, part, None)
                if module is None:
                    break
            if module is not None:
                return module
        raise ValueError(
            f"{self.spec.id!r}: cannot find the key projection of the last layer (looked for "
            f"{', '.join(_KEY_PROJECTIONS)})"
        )

    def last_layer_keys(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, H, N, d)`` keys of the patch tokens (row-major grid :attr:`grid`) of the last layer, for
        ``pixels`` ``(B, 3, h, w)`` normalised with :attr:`mean`/:attr:`std` at :attr:`image_size`."""
        if tuple(pixels.shape[-2:]) != self.image_size:
            raise ValueError(f"VFM windows must be {self.image_size}, got {tuple(pixels.shape[-2:])}")
        captured: list[torch.Tensor] = []
        handle = self._key_proj.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.model(pixel_values=pixels.to(device=self.device, dtype=next(self.model.parameters()).dtype))
        finally:
            handle.remove()
        keys = captured[-1]  # (B, L, H * d)
        b, length, width = keys.shape
        n = self.grid[0] * self.grid[1]
        if length < n:
            raise ValueError(f"{self.spec.id!r}: {length} tokens for a {self.grid} patch grid")
        return keys[:, length - n :].reshape(b, n, self.heads, width // self.heads).transpose(1, 2)
