"""The segment-anything architectures (family ``sam``): what network a SAM checkpoint's state dict belongs to.

:data:`SAM_VARIANTS` mirrors Meta's ``sam_model_registry`` (``vit_h``, ``vit_l``, ``vit_b``) with the build
arguments made explicit, plus ``tiny`` (a small encoder at the same 1024-pixel input) for CI. A checkpoint folder may describe its network in
``sam_config.json``: ``{"model_type": ..., "weights": ...}`` or ``{"build": {SamArch fields}, "weights": ...}``.
The SAM adapter and the tiny checkpoint builder both build networks here, so tiny and real checkpoints load
through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

CONFIG_FILE = "sam_config.json"


@dataclass(frozen=True)
class SamArch:
    """Build arguments of one SAM variant (the fields of segment-anything's ``_build_sam`` made explicit)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    prompt_embed_dim: int = 256
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


SAM_VARIANTS: dict[str, SamArch] = {
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArch(768, 12, 12, (2, 5, 8, 11)),
    # CI variant: a 2-block encoder of width 32 at the real 1024-pixel input, so the predictor and the automatic mask
    # generator resize and pad exactly as for vit_h (they read img_size from the encoder).
    "tiny": SamArch(
        32,
        2,
        2,
        (1,),
        img_size=1024,
        prompt_embed_dim=32,
        window_size=14,
        mlp_ratio=2.0,
        decoder_mlp_dim=64,
        decoder_heads=2,
        iou_head_hidden_dim=32,
    ),
}


def build_sam(arch: SamArch) -> Any:
    """An untrained ``segment_anything.modeling.Sam`` of the given architecture, in eval mode."""
    # torch and segment_anything are heavy: imported only when a model is built
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed = arch.img_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.img_size,
            mlp_ratio=arch.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(arch.encoder_global_attn_indexes),
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embed, embed),
            input_image_size=(arch.img_size, arch.img_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def arch_from_config(cfg: dict[str, Any]) -> SamArch:
    if "build" in cfg:
        build = dict(cfg["build"])
        build["encoder_global_attn_indexes"] = tuple(build["encoder_global_attn_indexes"])
        return SamArch(**build)
    model_type = cfg.get("model_type", "vit_h")
    if model_type not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM model_type {model_type!r}; known: {', '.join(SAM_VARIANTS)}")
    return SAM_VARIANTS[model_type]


def guess_model_type(name: str) -> str:
    for key in ("vit_h", "vit_l", "vit_b"):
        if key in name:
            return key
    return "vit_h"
