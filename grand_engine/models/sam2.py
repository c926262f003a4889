"""SAM 2 / SAM 2.1 box prompts on still images (family ``sam2``): transformers' ``Sam2Model`` + ``Sam2Processor``.

One adapter serves every SAM 2 and SAM 2.1 checkpoint in the transformers layout (``facebook/sam2.1-hiera-tiny``
… ``-large``, or a local folder). It has the box-prompt API of the ``sam`` family (:meth:`segment_boxes`,
:meth:`segment_boxes_with_scores`), so the ``masks`` stage takes either. The processor stretches the image to
1024×1024 and maps xyxy pixel boxes into that frame per axis; masks come back at the original size, binarised at
logit ``mask_threshold`` (0, the processor's), as COCO RLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grand_engine.io import rle
from grand_engine.models.base import Adapter, compile_module, hf_load_kwargs
from grand_engine.models.imaging import (
    CHANNELS_LAST,
    EMBEDDING_CACHE_IMAGES,
    ImageCache,
    check_box_prompts,
    check_image,
)


class Sam2Adapter(Adapter):
    """transformers SAM 2 image predictor. ``spec.options``: ``mask_threshold`` (default 0.0), ``embedding_cache``
    (images whose image embedding is kept between box-prompt calls, default 4), ``compile``. Shared by the stages of
    a process with the same spec, as the ``sam`` family (one embedding per image for all box-prompt stages)."""

    family = "sam2"
    shareable = True

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import Sam2Model, Sam2Processor

        kwargs = hf_load_kwargs(self.spec)
        self.processor = Sam2Processor.from_pretrained(self.model_path, **kwargs)
        model = Sam2Model.from_pretrained(self.model_path, dtype=self.dtype, **kwargs)
        self.model = model.to(self.device).eval()
        self.model.vision_encoder = compile_module(self.model.vision_encoder, self.spec)
        self.mask_threshold = float(self.spec.options.get("mask_threshold", 0.0))
        self.embeddings = ImageCache(int(self.spec.options.get("embedding_cache", EMBEDDING_CACHE_IMAGES)))
        self.encoded = 0  # image embeddings computed (the others came from the cache)

    def embed(self, image: np.ndarray) -> tuple[Any, Any]:
        """``(image embeddings, original sizes)`` of one image: from the cache when the same read-only array was
        encoded recently, else by running the image encoder."""
        cached = self.embeddings.get(image)
        if cached is not None:
            return cached
        inputs = self.processor(images=[image], return_tensors="pt", input_data_format=CHANNELS_LAST).to(self.device)
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.model.dtype))
        self.encoded += 1
        self.embeddings.put(image, (embeddings, inputs["original_sizes"]))
        return embeddings, inputs["original_sizes"]

    def segment_boxes(
        self, image: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray, max_boxes_per_call: int = 64
    ) -> list[dict[str, Any]]:
        """One mask (COCO RLE) per xyxy box prompt; see :meth:`segment_boxes_with_scores`."""
        return self.segment_boxes_with_scores(image, boxes_xyxy, max_boxes_per_call)[0]

    def segment_boxes_with_scores(
        self, image: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray, max_boxes_per_call: int = 64
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Masks for xyxy box prompts (single-mask output) and SAM 2's predicted IoU per mask. The image is encoded
        once; boxes (clipped to the image) go through the decoder at most ``max_boxes_per_call`` at a time."""
        # torch is heavy: imported on first use
        import torch

        h, w = check_image(image).shape[:2]
        boxes = check_box_prompts(boxes_xyxy, h, w, max_boxes_per_call)
        if len(boxes) == 0:
            return [], np.zeros((0,), np.float32)
        masks_out: list[dict[str, Any]] = []
        scores_out: list[np.ndarray] = []
        with torch.inference_mode():
            embeddings, original_sizes = self.embed(image)
            for start in range(0, len(boxes), max_boxes_per_call):
                part = boxes[start : start + max_boxes_per_call]
                prompts = self.processor(
                    input_boxes=[part.tolist()], original_sizes=original_sizes, return_tensors="pt"
                ).to(self.device)
                out = self.model(
                    image_embeddings=embeddings,
                    input_boxes=prompts["input_boxes"].to(self.model.dtype),
                    multimask_output=False,
                )
                masks = self.processor.post_process_masks(
                    out.pred_masks.float().cpu(), original_sizes.cpu(), mask_threshold=self.mask_threshold
                )[0]
                masks_out.extend(rle.encode(masks[:, 0].numpy().astype(bool)))
                scores_out.append(out.iou_scores[0, :, 0].float().cpu().numpy())
        return masks_out, np.concatenate(scores_out).astype(np.float32)
