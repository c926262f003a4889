"""Tiny video checkpoints: SAM 2 video propagation (family ``sam2_video``) and Qwen2.5-VL (family ``video_vlm``),
random weights in the transformers ``save_pretrained`` layout, loaded back by the same adapters as the real ones."""

from __future__ import annotations

from pathlib import Path

from grand_engine.models.imaging import IMAGENET_MEAN, IMAGENET_STD, seeded
from grand_engine.models.tiny.sam2 import hiera_vision_config
from grand_engine.models.tiny.tokenizers import train_chatml_bpe

TINY_SAM2_SIDE = 256
"""Input side of the tiny SAM 2 (the real checkpoints take 1024², ``facebook/sam2.1-hiera-*``); 256 keeps CPU
propagation of a short clip to seconds, as the tiny SAM's 256² input does."""

QWEN_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
"""The Qwen2.5-VL chat and vision tokens the processor and the chat template use."""

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-VL's ChatML layout (system turn added when missing; images and videos as vision-token spans)."""


def build_sam2_video(dest: Path) -> None:
    """A tiny random ``Sam2VideoModel``: a 5-block Hiera backbone, one memory-attention layer, 3 memory slots.

    The processor keeps the real SAM 2.1 settings (ImageNet normalisation, bilinear resize to a square input,
    masks at a quarter of the input side, the point padding value -10) at :data:`TINY_SAM2_SIDE`. transformers'
    memory attention takes 64-channel memories and splits object pointers of the model width into 64-wide pieces,
    so the memory encoder keeps 64 output channels and the model width is 128 (the real one is 256).
    """
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import (
        Sam2ImageProcessor,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
    )

    side = TINY_SAM2_SIDE
    width = 128
    vision = hiera_vision_config(side, width, window_sizes=[8, 4, 4, 4], background=[4, 4])
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": width, "image_size": side, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": width, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
        image_size=side,
        num_maskmem=3,
        memory_attention_hidden_size=width,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[side // 16, side // 16],
        memory_encoder_hidden_size=width,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=64,
    )
    image_processor = Sam2ImageProcessor(
        size={"height": side, "width": side},
        mask_size={"height": side // 4, "width": side // 4},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    video_processor = Sam2VideoVideoProcessor(
        size={"height": side, "width": side}, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)
    )
    processor = Sam2VideoProcessor(
        image_processor=image_processor, video_processor=video_processor, target_size=side, point_pad_value=-10
    )
    with seeded(0):
        model = Sam2VideoModel(config).eval()
    dest = Path(dest)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


def build_qwen2_5_vl(dest: Path) -> None:
    """A tiny random ``Qwen2_5_VLForConditionalGeneration`` (2-block vision tower, 2-layer text model) with a trained
    byte-level BPE, the Qwen chat and vision tokens, the ChatML template and the real image processor settings of
    ``Qwen/Qwen2.5-VL-7B-Instruct`` (14 px patches merged 2×2, 2-frame temporal patches, 3,136 to 12,845,056
    pixels); the video processor keeps transformers' Qwen2-VL defaults (128 to 768 merged patches per frame)."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = train_chatml_bpe(1000, QWEN_SPECIAL_TOKENS)
    ids = tokenizer.convert_tokens_to_ids
    image_processor = Qwen2VLImageProcessor(
        min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            # multimodal RoPE: the (temporal, height, width) sections add up to half the 32-wide head
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": None,
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
            "tie_word_embeddings": False,  # tied, a random decoder mostly repeats its input token
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    with seeded(0):
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
    dest = Path(dest)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
