"""Closed-set object detection (family ``detector``): D-FINE, RT-DETR / RT-DETRv2 and the DETR family.

All of them load through ``AutoModelForObjectDetection`` + ``AutoImageProcessor``; the processor's
``post_process_object_detection`` maps boxes to original-image pixels and labels come from the
checkpoint's ``id2label``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grand_engine.models.base import Adapter, hf_load_kwargs, tiny_builder
from grand_engine.models.imaging import Detections, check_images, chunks, clip_boxes, place, seeded


class ClosedSetDetector(Adapter):
    """A detector with a fixed class table (``model.config.id2label``)."""

    family = "detector"
    batch_size: int = 8

    def load(self) -> None:
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
        import torch

        images = check_images(images)
        out: list[Detections] = []
        with torch.inference_mode():
            for _, part in chunks(images, self.batch_size):
                inputs = self.processor(images=list(part), return_tensors="pt").to(self.device)
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


# --- tiny checkpoints -------------------------------------------------------------------------------


TINY_DETECTOR_SIZE = 320


def _coco_labels() -> dict[int, str]:
    from grand_engine.resources import data_file

    names = [n.strip() for n in data_file("coco_categories.txt").read_text().splitlines() if n.strip()]
    return dict(enumerate(names))


def _rtdetr_processor():
    from transformers import RTDetrImageProcessor

    # The real checkpoints take 640×640; the tiny ones take 320×320, which keeps CPU tests fast (the
    # convolutional backbone dominates and scales with the pixel count).
    return RTDetrImageProcessor(size={"height": TINY_DETECTOR_SIZE, "width": TINY_DETECTOR_SIZE}, do_pad=False)


@tiny_builder("dfine")
def build_tiny_dfine(dest: Path) -> None:
    """D-FINE with a small HGNetV2 backbone and the COCO-80 label table (as ``dfine-*-obj2coco``)."""
    from transformers import DFineConfig, DFineForObjectDetection, HGNetV2Config

    backbone = HGNetV2Config(
        stage_in_channels=[16, 16, 32, 64],
        stage_mid_channels=[8, 16, 32, 64],
        stage_out_channels=[16, 32, 64, 128],
        stage_num_blocks=[1, 1, 1, 1],
        stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5],
        stage_numb_of_layers=[2, 2, 2, 2],
        embedding_size=8,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
        stem_channels=[3, 8, 16],
    )
    labels = _coco_labels()
    config = DFineConfig(
        backbone_config=backbone,
        encoder_hidden_dim=16,
        encoder_in_channels=[32, 64, 128],
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        d_model=16,
        num_queries=30,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32,
        decoder_n_points=[3, 6, 3],
        decoder_layers=2,
        decoder_attention_heads=2,
        num_denoising=0,
        depth_mult=0.34,
        hidden_expansion=0.5,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    with seeded(0):
        model = DFineForObjectDetection(config).eval()
    model.save_pretrained(dest)
    _rtdetr_processor().save_pretrained(dest)


def _rtdetr_config(config_cls):
    from transformers import RTDetrResNetConfig

    backbone = RTDetrResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
    )
    labels = _coco_labels()
    return config_cls(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        encoder_hidden_dim=16,
        encoder_in_channels=[32, 64, 128],
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        d_model=16,
        num_queries=30,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32,
        decoder_layers=2,
        decoder_attention_heads=2,
        num_denoising=0,
        disable_custom_kernels=True,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )


@tiny_builder("rtdetr")
def build_tiny_rtdetr(dest: Path) -> None:
    """RT-DETR (ResNet-vd backbone) with the COCO-80 label table."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection

    with seeded(0):
        model = RTDetrForObjectDetection(_rtdetr_config(RTDetrConfig)).eval()
    model.save_pretrained(dest)
    _rtdetr_processor().save_pretrained(dest)


@tiny_builder("rtdetr-v2")
def build_tiny_rtdetr_v2(dest: Path) -> None:
    """RT-DETRv2 (ResNet-vd backbone) with the COCO-80 label table."""
    from transformers import RTDetrV2Config, RTDetrV2ForObjectDetection

    with seeded(0):
        model = RTDetrV2ForObjectDetection(_rtdetr_config(RTDetrV2Config)).eval()
    model.save_pretrained(dest)
    _rtdetr_processor().save_pretrained(dest)
