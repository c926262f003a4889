"""Tiny DINO checkpoint (family ``dino``): a DINO-style transformers ViT.

Layout and processor settings are ``facebook/dino-vitb16``'s (ViT, patch 16, 224² input, ImageNet mean/std in its
``preprocessor_config.json``); only the network is small: 2 layers of width 64 with 4 heads.
"""

from __future__ import annotations

from pathlib import Path

from grand_engine.models.imaging import IMAGENET_MEAN, IMAGENET_STD, seeded


def build_dino_vit(dest: Path) -> None:
    """A 2-layer, 4-head ViT at 224² with patch 16 and no pooler (as ``facebook/dino-vitb16``), with its image
    processor, in the ``save_pretrained`` layout."""
    # transformers is heavy: imported only when a checkpoint is built
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
