"""CLIP's side of CASS: a ViT image tower with a replaceable last attention, and patch-grid resampling.

:class:`ClipDense` wraps a loaded :class:`grand_engine.models.clip.ClipAdapter` (open_clip, so ``hf-hub:``,
``local-dir:`` and plain directories load through the project's one CLIP path). For a batch of windows it runs every
block but the last as usual, then gives the window's global embedding (the unchanged last block, pooling and
projection, i.e. ``encode_image``) and the last block's per-head keys and values of the patch tokens.
:meth:`ClipDense.dense` turns the values and a replacement attention into patch embeddings in the joint image-text
space: attention output → output projection (and layer scale) → ``ln_post`` → ``proj``, without the last block's
residual and MLP, as training-free CLIP segmenters do (the residual carries the global, not the local, signal).

The VFM side is the ``dino`` model family (:class:`grand_engine.models.dino.DinoAdapter`), whose tiny checkpoint
``dino-vit`` is built by :mod:`grand_engine.models.tiny.dino`; the tiny CLIP is ``clip-vit-b16``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from grand_engine.models.clip import ClipAdapter

__all__ = ["ClipDense", "ClipWindowTokens", "resample_grid"]


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
