"""Monocular depth: DPT (incl. the BEiT backbone of MiDaS v3.1 ``dpt_beit_large_512``) and Depth Anything V2.

Both load through ``AutoModelForDepthEstimation`` + ``AutoImageProcessor`` from a Hub id or a local
directory. The output is relative inverse depth (bigger = nearer, as MiDaS), resized so that its long
side is ``long_side`` pixels with the image's aspect ratio kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from grand_engine.models.base import Adapter, compile_module, hf_load_kwargs
from grand_engine.models.imaging import CHANNELS_LAST, check_images, chunks, place


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
        # transformers is heavy: imported on first use
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        kwargs = hf_load_kwargs(self.spec)
        self.processor = AutoImageProcessor.from_pretrained(self.model_path, **kwargs)
        model = AutoModelForDepthEstimation.from_pretrained(self.model_path, **kwargs)
        self.model = compile_module(place(model, self.device, self.dtype), self.spec)
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))

    def predict(self, images: list[np.ndarray], long_side: int = 512) -> list[DepthMap]:
        """Relative inverse depth for each image (see :class:`DepthMap`).

        The processor keeps each image's aspect ratio, so inputs of the same processed shape are
        batched together (``batch_size`` at a time).
        """
        # torch is heavy: imported on first use
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
        # torch is heavy: imported on first use
        import torch

        values = self.processor(images=image, return_tensors="pt", input_data_format=CHANNELS_LAST)["pixel_values"]
        return torch.as_tensor(values)[0]
