"""The two backbones of CASS: CLIP's ViT with a replaceable last attention, and DINO's last-layer keys.

* :class:`ClipDense` wraps a loaded :class:`grand_engine.models.clip.ClipAdapter` (open_clip, so ``hf-hub:``,
  ``local-dir:`` and plain directories load through the project's one CLIP path). For a batch of windows it runs
  every block but the last as usual, then gives the window's global embedding (the unchanged last block, pooling
  and projection, i.e. ``encode_image``) and the last block's per-head keys and values of the patch tokens.
  :meth:`ClipDense.dense` turns the values and a replacement attention into patch embeddings in the joint
  image-text space: attention output → output projection (and layer scale) → ``ln_post`` → ``proj``, without the
  last block's residual and MLP, as training-free CLIP segmenters do (the residual carries the global, not the
  local, signal).
* :class:`DinoAdapter` (model family ``dino``) loads a transformers ViT (``facebook/dino-vitb16`` is ViT-B/16
  DINO) from a Hub id or a directory and returns the per-head keys of its last layer on the patch grid.

``build_tiny_dino_vit`` writes a random 2-layer DINO-style ViT checkpoint (``save_pretrained`` layout, the same
loader as the real one); the tiny CLIP is the project's ``clip-vit`` checkpoint (:mod:`grand_engine.models.clip`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grand_engine.models.base import Adapter, hf_load_kwargs
from grand_engine.models.imaging import place, seeded

if TYPE_CHECKING:
    import torch

    from grand_engine.models.clip import ClipAdapter

__all__ = ["ClipDense", "ClipWindowTokens", "DinoAdapter", "build_tiny_dino_vit", "resample_grid"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_KEY_PROJECTIONS = ("attention.k_proj", "attention.attention.key", "attention.key", "attn.k_proj")
"""Where the last layer's key projection sits in a transformers ViT-family layer (the name changed across versions);
the layers themselves are ``model.layers`` (transformers 5) or ``model.encoder.layer`` (transformers 4)."""


@dataclass
class ClipWindowTokens:
    """CLIP's view of a batch of windows: ``global_embed`` ``(B, E)`` L2-normalised, and the last block's
    ``keys``/``values`` of the patch tokens, ``(B, H, N, d)`` each, ``N = grid[0] · grid[1]`` row-major."""

    global_embed: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    grid: tuple[int, int]


class ClipDense:
    """Dense (per-patch) CLIP features with a replaceable last-layer attention (see the module docstring)."""

    def __init__(self, clip: ClipAdapter) -> None:
        import open_clip
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        self.clip = clip
        visual = getattr(clip.model, "visual", None)
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"CASS needs an open_clip ViT image tower (VisionTransformer), but {clip.spec.id!r} has "
                f"{type(visual).__name__}; use a ViT CLIP such as ViT-B-16"
            )
        if getattr(visual, "attn_pool", None) is not None:
            raise ValueError(f"{clip.spec.id!r}: image towers with attentional pooling (CoCa) are not supported")
        last = visual.transformer.resblocks[-1]
        if not isinstance(last, ResidualAttentionBlock) or not hasattr(last.attn, "in_proj_weight"):
            raise ValueError(
                f"{clip.spec.id!r}: the last image block is {type(last).__name__}; CASS needs open_clip's "
                "ResidualAttentionBlock with a packed nn.MultiheadAttention"
            )
        self.visual = visual
        self.last = last
        self.heads = int(last.attn.num_heads)
        self.image_size = tuple(int(v) for v in visual.image_size)
        self.patch_size = tuple(int(v) for v in visual.patch_size)
        self.grid = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        cfg = open_clip.get_model_preprocess_cfg(clip.model)
        self.mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.visual.parameters()).dtype

    def encode(self, pixels: torch.Tensor) -> ClipWindowTokens:
        """Tokens of ``pixels`` ``(B, 3, H, W)`` (normalised, at :attr:`image_size`)."""
        import torch.nn.functional as F

        if tuple(pixels.shape[-2:]) != self.image_size:
            raise ValueError(f"CLIP windows must be {self.image_size}, got {tuple(pixels.shape[-2:])}")
        visual = self.visual
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = visual._embeds(pixels.to(self.dtype))  # (B, 1 + N, D)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        full = self.last(x)
        if not batch_first:
            x, full = x.transpose(0, 1), full.transpose(0, 1)
        pooled, _ = visual._pool(full)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        qkv = F.linear(self.last.ln_1(x), self.last.attn.in_proj_weight, self.last.attn.in_proj_bias)
        _, keys, values = qkv.chunk(3, dim=-1)
        b, length, width = keys.shape
        n = self.grid[0] * self.grid[1]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t[:, length - n :].reshape(b, n, self.heads, width // self.heads).transpose(1, 2)

        return ClipWindowTokens(F.normalize(pooled.float(), dim=-1), heads(keys), heads(values), self.grid)

    def dense(self, values: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """``(B, N, E)`` L2-normalised patch embeddings from the last block's ``values`` ``(B, H, N, d)`` mixed by
        ``attention`` ``(B, H, N, N)``."""
        import torch.nn.functional as F

        mixed = attention.to(values.dtype) @ values  # (B, H, N, d)
        b, h, n, d = mixed.shape
        out = mixed.transpose(1, 2).reshape(b, n, h * d)
        out = F.linear(out, self.last.attn.out_proj.weight, self.last.attn.out_proj.bias)
        out = self.last.ls_1(out)
        out = self.visual.ln_post(out)
        if self.visual.proj is not None:
            out = out @ self.visual.proj
        return F.normalize(out.float(), dim=-1)


class DinoAdapter(Adapter):
    """A transformers ViT (DINO ViT-B/16: ``facebook/dino-vitb16``) exposing its last layer's keys per head."""

    family = "dino"

    def load(self) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTModel

        kwargs = hf_load_kwargs(self.spec)
        config = AutoConfig.from_pretrained(self.model_path, **kwargs)
        if config.model_type == "vit":
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


def resample_grid(tokens: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """``(B, H, N, d)`` tokens on a row-major ``grid`` → the same on ``target`` (bilinear), for a VFM whose patch
    grid differs from CLIP's (e.g. DINO ViT-B/8 beside CLIP ViT-B/16)."""
    import torch.nn.functional as F

    if tuple(grid) == tuple(target):
        return tokens
    b, h, n, d = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not fill a {grid[0]}x{grid[1]} grid")
    maps = tokens.reshape(b * h, grid[0], grid[1], d).permute(0, 3, 1, 2).float()
    out = F.interpolate(maps, size=tuple(target), mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(b, h, target[0] * target[1], d).to(tokens.dtype)


def build_tiny_dino_vit(dest: Path) -> None:
    """A 2-layer, 4-head DINO-style ViT at 224² with patch 16 (the layout of ``facebook/dino-vitb16``) and its
    ImageNet-normalising image processor, in the ``save_pretrained`` layout."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        image_size=224,
        patch_size=16,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        qkv_bias=True,
    )
    with seeded(0):
        model = ViTModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(dest)
    ViTImageProcessor(
        size={"height": 224, "width": 224}, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)
    ).save_pretrained(dest)
