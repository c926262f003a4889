"""Tiny open-vocabulary detector checkpoints: OWL-ViT, OWLv2 (family ``owl``) and Grounding DINO (family
``grounding_dino``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grand_engine.models.imaging import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, seeded
from grand_engine.models.tiny.tokenizers import bert_tokenizer, clip_tokenizer


def _owl_configs(image_size: int, patch_size: int, tokenizer: Any) -> dict[str, Any]:
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    return {"text_config": text, "vision_config": vision, "projection_dim": 32}


def build_owlvit(dest: Path) -> None:
    """OWL-ViT at the real 768² input with patch 32 (as ``google/owlvit-base-patch32``)."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    tokenizer = clip_tokenizer(model_max_length=16)
    with seeded(0):
        model = OwlViTForObjectDetection(OwlViTConfig(**_owl_configs(768, 32, tokenizer))).eval()
    # As google/owlvit-base-patch32: stretched to 768x768 (aspect not kept), bicubic, OpenAI CLIP mean/std.
    image_processor = OwlViTImageProcessor(
        size={"height": 768, "width": 768},
        crop_size={"height": 768, "width": 768},
        do_center_crop=False,
        resample=3,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    model.save_pretrained(dest)
    OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)


def build_owlv2(dest: Path) -> None:
    """OWLv2 at the real 960² padded-square input with patch 16 (as ``google/owlv2-base-patch16-ensemble``)."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = clip_tokenizer(model_max_length=16)
    with seeded(0):
        model = Owlv2ForObjectDetection(Owlv2Config(**_owl_configs(960, 16, tokenizer))).eval()
    # As google/owlv2-*: padded bottom/right to a square with grey (0.5), then resized to 960x960, bilinear,
    # OpenAI CLIP mean/std.
    image_processor = Owlv2ImageProcessor(
        size={"height": 960, "width": 960},
        do_pad=True,
        resample=2,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    model.save_pretrained(dest)
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)


def build_grounding_dino(dest: Path) -> None:
    """Grounding DINO with a small Swin backbone and BERT text tower on the real bert-base-uncased vocabulary."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    tokenizer = bert_tokenizer()
    backbone = SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7, out_indices=[2, 3, 4]
    )
    text = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        use_pretrained_backbone=False,
        use_timm_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=100,
        encoder_n_points=2,
        decoder_n_points=2,
        num_feature_levels=4,
    )
    with seeded(0):
        model = GroundingDinoForObjectDetection(config).eval()
    # As IDEA-Research/grounding-dino-*: shortest edge 800 / longest 1333 (aspect kept), bilinear, ImageNet
    # mean/std, batches padded bottom-right with a pixel mask.
    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": 800, "longest_edge": 1333},
        resample=2,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_pad=True,
    )
    model.save_pretrained(dest)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)
