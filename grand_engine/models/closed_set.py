"""Closed-set object detection (family ``detector``): D-FINE, RT-DETR / RT-DETRv2 and the DETR family.

All of them load through ``AutoModelForObjectDetection`` + ``AutoImageProcessor``; the processor's
``post_process_object_detection`` maps boxes to original-image pixels and labels come from the
checkpoint's ``id2label``.
"""

from __future__ import annotations

import numpy as np

from grand_engine.models.base import Adapter, hf_load_kwargs
from grand_engine.models.imaging import CHANNELS_LAST, Detections, check_images, chunks, clip_boxes, place


class ClosedSetDetector(Adapter):
    """A detector with a fixed class table (``model.config.id2label``)."""

    family = "detector"
    batch_size: int = 8

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        kwargs = hf_load_kwargs(self.spec)
        self.processor = AutoImageProcessor.from_pretrained(self.model_path, **kwargs)
        model = AutoModelForObjectDetection.from_pretrained(self.model_path, **kwargs)
        self.model = place(model, self.device, self.dtype)
        self.batch_size = int(self.spec.options.get("batch_size", self.batch_size))
        self.id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}

    @property
    def class_names(self) -> list[str]:
        return [self.id2label[i] for i in sorted(self.id2label)]

    def detect(self, images: list[np.ndarray], threshold: float = 0.05) -> list[Detections]:
        """Detections with score ≥ ``threshold`` per image, boxes xyxy in original pixels (clipped)."""
        # torch is heavy: imported on first use
        import torch

        images = check_images(images)
        out: list[Detections] = []
        with torch.inference_mode():
            for _, part in chunks(images, self.batch_size):
                inputs = self.processor(images=list(part), return_tensors="pt", input_data_format=CHANNELS_LAST).to(
                    self.device
                )
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                outputs = self.model(**inputs)
                outputs.logits = outputs.logits.float().cpu()
                outputs.pred_boxes = outputs.pred_boxes.float().cpu()
                sizes = [im.shape[:2] for im in part]
                # keep everything here and apply ``score >= threshold`` below (processors differ on > / >=)
                results = self.processor.post_process_object_detection(outputs, threshold=-1.0, target_sizes=sizes)
                for (h, w), res in zip(sizes, results, strict=True):
                    scores = res["scores"].float().cpu().numpy().astype(np.float32)
                    keep = scores >= threshold
                    ids = res["labels"].cpu().numpy().astype(np.int64)[keep]
                    out.append(
                        Detections(
                            boxes=clip_boxes(res["boxes"].float().cpu().numpy()[keep], h, w),
                            scores=scores[keep],
                            labels=[self.id2label.get(int(i), str(int(i))) for i in ids],
                            label_ids=ids,
                        )
                    )
        return out
