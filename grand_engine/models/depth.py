"""Monocular depth: DPT (incl. the BEiT backbone of MiDaS v3.1 ``dpt_beit_large_512``) and Depth Anything V2.

Both load through ``AutoModelForDepthEstimation`` + ``AutoImageProcessor`` from a Hub id or a local
directory. The output is relative inverse depth (bigger = nearer, as MiDaS), resized so that its long
side is ``long_side`` pixels with the image's aspect ratio kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grand_engine.models.base import Adapter, hf_load_kwargs, tiny_builder
from grand_engine.models.imaging import check_images, chunks, place, seeded


@dataclass
class DepthMap:
    """Relative inverse depth of one image.

    ``depth`` is ``(h, w)`` float32 with ``max(h, w) == long_side`` (aspect kept); ``scale`` is image
    pixels per depth pixel, so image point ``(x, y)`` reads ``depth[int(y / scale), int(x / scale)]``.
    """

    depth: np.ndarray
    scale: float
    image_size: tuple[int, int]  # (height, width) of the original image


def depth_size(height: int, width: int, long_side: int) -> tuple[int, int, float]:
    """Output ``(h, w, scale)`` for an image of ``height×width``: the long side becomes ``long_side``."""
    if long_side < 1:
        raise ValueError(f"long_side must be positive, got {long_side}")
    scale = max(height, width) / long_side
    h = max(1, round(height / scale))
    w = max(1, round(width / scale))
    return h, w, scale


class DepthAdapter(Adapter):
    """DPT / Depth Anything depth estimation."""

    family = "depth"
    batch_size: int = 8

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        kwargs = hf_load_kwargs(self.spec)
        self.processor = AutoImageProcessor.from_pretrained(self.model_path, **kwargs)
        model = AutoModelForDepthEstimation.from_pretrained(self.model_path, **kwargs)
        self.model = place(model, self.device, self.dtype)
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))

    def predict(self, images: list[np.ndarray], long_side: int = 512) -> list[DepthMap]:
        """Relative inverse depth for each image (see :class:`DepthMap`).

        The processor keeps each image's aspect ratio, so inputs of the same processed shape are
        batched together (``batch_size`` at a time).
        """
        import torch
        import torch.nn.functional as F

        images = check_images(images)
        pixels = [self._preprocess(im) for im in images]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, px in enumerate(pixels):
            groups[tuple(px.shape)].append(i)
        out: list[DepthMap | None] = [None] * len(images)
        with torch.inference_mode():
            for members in groups.values():
                for _, part in chunks(members, self.batch_size):
                    batch = torch.stack([pixels[i] for i in part]).to(self.device, dtype=self.model.dtype)
                    pred = self.model(pixel_values=batch).predicted_depth.float()
                    if pred.ndim == 4:
                        pred = pred[:, 0]
                    for row, i in enumerate(part):
                        height, width = images[i].shape[:2]
                        h, w, scale = depth_size(height, width, long_side)
                        resized = F.interpolate(
                            pred[row][None, None], size=(h, w), mode="bicubic", align_corners=False
                        )
                        depth = resized[0, 0].cpu().numpy().astype(np.float32)
                        out[i] = DepthMap(depth=depth, scale=scale, image_size=(height, width))
        return out  # type: ignore[return-value]

    def _preprocess(self, image: np.ndarray):
        import torch

        values = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return torch.as_tensor(values)[0]


# --- tiny checkpoints -------------------------------------------------------------------------------


@tiny_builder("depth-dpt-beit")
def build_tiny_dpt_beit(dest: Path) -> None:
    """DPT with a 4-layer BEiT backbone at MiDaS v3.1's 512 input (as ``Intel/dpt-beit-large-512``)."""
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
    processor = DPTImageProcessor(
        size={"height": 512, "width": 512}, keep_aspect_ratio=True, ensure_multiple_of=32, resample=3
    )
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


@tiny_builder("depth-anything-v2")
def build_tiny_depth_anything(dest: Path) -> None:
    """Depth Anything V2 (DINOv2 backbone, patch 14, 518 input) in its relative-depth variant."""
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
    processor = DPTImageProcessor(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
