"""Tiny SAM 2 image checkpoint (family ``sam2``): a small ``Sam2Model`` at the real input of ``facebook/sam2.1-*``."""

from __future__ import annotations

from pathlib import Path

from grand_engine.models.imaging import IMAGENET_MEAN, IMAGENET_STD, seeded


def hiera_vision_config(side: int, width: int, window_sizes: list[int], background: list[int]) -> dict:
    """The vision part of a tiny SAM 2 configuration: a 5-block Hiera backbone (stages of 1, 1, 2, 1 blocks, 16 to
    128 channels, global attention in the second block of stage 3, as the real ones sit inside stage 3) at a
    ``side``² input, with an FPN of ``width``; ``window_sizes`` per stage and the positional-embedding
    ``background`` size fit the input side."""
    return {
        "model_type": "sam2_vision_model",
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 16,
            "num_attention_heads": 1,
            "image_size": [side, side],
            "blocks_per_stage": [1, 1, 2, 1],
            "embed_dim_per_stage": [16, 32, 64, 128],
            "num_attention_heads_per_stage": [1, 1, 2, 2],
            "window_size_per_stage": window_sizes,
            "global_attention_blocks": [3],
            "window_positional_embedding_background_size": background,
        },
        "backbone_channel_list": [128, 64, 32, 16],
        "backbone_feature_sizes": [[side // 4, side // 4], [side // 8, side // 8], [side // 16, side // 16]],
        "fpn_hidden_size": width,
    }


def build_sam2(dest: Path) -> None:
    """A 5-block Hiera backbone (global attention in the second block of stage 3, as the real ones sit inside stage
    3) with an FPN, prompt encoder and mask decoder of width 32, at the real 1024² input. The processor is the real
    one: stretched to 1024x1024, bilinear, ImageNet mean/std, masks at 256x256."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    side, width = 1024, 32
    vision = hiera_vision_config(side, width, window_sizes=[8, 4, 14, 7], background=[7, 7])
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": width, "image_size": side, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": width, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
    )
    with seeded(0):
        model = Sam2Model(config).eval()
    image_processor = Sam2ImageProcessor(
        size={"height": side, "width": side},
        mask_size={"height": side // 4, "width": side // 4},
        resample=2,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    model.save_pretrained(dest)
    Sam2Processor(image_processor=image_processor, target_size=side, point_pad_value=-10).save_pretrained(dest)
