"""Tiny depth checkpoints: DPT with a BEiT backbone (MiDaS v3.1) and Depth Anything V2.

Processor settings are the real checkpoints' (``preprocessor_config.json`` of ``Intel/dpt-beit-large-512`` and
``depth-anything/Depth-Anything-V2-*-hf``); only the networks are small.
"""

from __future__ import annotations

from pathlib import Path

from grand_engine.models.imaging import IMAGENET_MEAN, IMAGENET_STD, seeded


def build_dpt_beit(dest: Path) -> None:
    """DPT with a 4-layer BEiT backbone at MiDaS v3.1's 512 input (as ``Intel/dpt-beit-large-512``)."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import BeitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    backbone = BeitConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=512,
        patch_size=16,
        use_relative_position_bias=True,
        use_absolute_position_embeddings=False,
        reshape_hidden_states=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = DPTConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[16, 32, 64, 64],
        fusion_hidden_size=32,
        reassemble_factors=[4, 2, 1, 0.5],
        head_in_index=-1,
    )
    with seeded(0):
        model = DPTForDepthEstimation(config).eval()
    # Intel/dpt-beit-large-512: 512x512, aspect kept, multiple of 32, bicubic, mean/std 0.5
    processor = DPTImageProcessor(
        size={"height": 512, "width": 512}, keep_aspect_ratio=True, ensure_multiple_of=32, resample=3
    )
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


def build_depth_anything(dest: Path) -> None:
    """Depth Anything V2 (DINOv2 backbone, patch 14, 518 input) in its relative-depth variant."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=518,
        patch_size=14,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[16, 32, 64, 64],
        fusion_hidden_size=32,
        head_hidden_size=16,
        depth_estimation_type="relative",
    )
    with seeded(0):
        model = DepthAnythingForDepthEstimation(config).eval()
    # Depth-Anything-V2-*-hf: 518x518, aspect kept, multiple of 14, bicubic, ImageNet mean/std
    processor = DPTImageProcessor(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
