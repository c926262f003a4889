"""Tiny SAM 3 checkpoint (family ``sam3``): a small ``Sam3Model`` at the real input of ``facebook/sam3``."""

from __future__ import annotations

from pathlib import Path

from grand_engine.models.imaging import seeded
from grand_engine.models.tiny.tokenizers import clip_tokenizer


def build_sam3(dest: Path) -> None:
    """A 2-layer ViT (patch 14 at 1008², windows of 24 with one global layer, as the real backbone), FPN, fusion
    encoder, decoder of 20 queries, geometry encoder and mask decoder of width 32, and a 1-layer CLIP text tower on a
    byte-level BPE with BOS/EOS at the top ids and the real 32-token prompt length. The processor is the real one:
    stretched to 1008x1008, bilinear, mean/std 0.5, masks at 288x288."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    tokenizer = clip_tokenizer(model_max_length=32)
    width = 32
    config = Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": width,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 1008,
                "patch_size": 14,
                "window_size": 24,
                "global_attn_indexes": [1],
                "pretrain_image_size": 336,
            },
            "fpn_hidden_size": width,
            "backbone_feature_sizes": [[288, 288], [144, 144], [72, 72]],
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": width,
            "intermediate_size": 64,
            "projection_dim": width,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        geometry_encoder_config={
            "hidden_size": width,
            "num_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        detr_encoder_config={"hidden_size": width, "num_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        detr_decoder_config={
            "hidden_size": width,
            "num_layers": 1,
            "num_queries": 20,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        mask_decoder_config={"hidden_size": width, "num_attention_heads": 2},
    )
    with seeded(0):
        model = Sam3Model(config).eval()
    image_processor = Sam3ImageProcessor(
        size={"height": 1008, "width": 1008},
        mask_size={"height": 288, "width": 288},
        resample=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    model.save_pretrained(dest)
    Sam3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)
