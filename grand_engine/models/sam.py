"""Segment Anything (family ``sam``) with the ``segment-anything`` package: box prompts and automatic masks.

Checkpoints are plain state dicts (``sam_vit_h_4b8939.pth`` …) loaded with ``torch.load(weights_only=True)``
into an architecture of :data:`grand_engine.models.sam_arch.SAM_VARIANTS` (``vit_h``, ``vit_l``, ``vit_b`` as Meta's
``sam_model_registry``, plus ``tiny`` for CI). ``spec.id`` may be:

* a ``.pth`` file (variant from ``options.model_type``, else guessed from the file name);
* a directory holding ``sam_config.json`` (``{"model_type": ..., "weights": ..., "build": {...}}``) and the
  weights, or the weights named by ``spec.file``;
* a Hub repository with ``spec.file`` naming the ``.pth`` inside it.

Masks are returned as COCO compressed RLE (``{"size": [H, W], "counts": str}``); boxes are xyxy pixels.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import hf_hub_download

from grand_engine.io import rle
from grand_engine.models.base import (
    Adapter,
    ModelNotFoundError,
    autocast_dtype,
    compile_module,
    hub_offline,
    looks_local,
)
from grand_engine.models.imaging import EMBEDDING_CACHE_IMAGES, ImageCache, check_box_prompts, check_image
from grand_engine.models.sam_arch import CONFIG_FILE, SamArch, arch_from_config, build_sam, guess_model_type


def box_prompts(boxes_xyxy: np.ndarray, image_hw: tuple[int, int], img_size: int) -> np.ndarray:
    """The xyxy boxes in the model's input frame: the image is resized so its long side is ``img_size``
    (segment-anything's ``ResizeLongestSide``), x scaled by ``new_w / w`` and y by ``new_h / h``."""
    # segment_anything is heavy: imported on first use
    from segment_anything.utils.transforms import ResizeLongestSide

    h, w = image_hw
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(h, w, img_size)
    scale = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float64)
    return (np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) * scale).astype(np.float32)


class SamAdapter(Adapter):
    """segment-anything ``Sam`` with a ``SamPredictor`` for box prompts and the automatic mask generator.

    ``spec.options``: ``model_type`` (see the module docstring), ``autocast`` (``bfloat16`` or ``float16``: the
    image encoder and the mask decoder run under ``torch.autocast``; off by default, as the reference ran SAM in
    float32), ``embedding_cache`` (images whose embedding is kept between box-prompt calls, default 4; 0 keeps
    none), ``compile`` (see :func:`~grand_engine.models.base.compile_module`). The adapter is shared by every stage
    of a process with the same model spec (``shareable``), so the box-prompt stages of one process reuse one image
    embedding per image."""

    family = "sam"
    shareable = True

    def load(self) -> None:
        # torch and segment_anything are heavy: imported on first use
        import torch
        from segment_anything import SamPredictor

        arch, weights = self._resolve()
        model = build_sam(arch)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model = model.to(self.device)
        self.arch = arch
        self.model = model.eval()
        self.model.image_encoder = compile_module(self.model.image_encoder, self.spec)
        self.predictor = SamPredictor(self.model)
        self.embeddings = ImageCache(int(self.spec.options.get("embedding_cache", EMBEDDING_CACHE_IMAGES)))
        self.autocast = autocast_dtype(self.spec.options.get("autocast"))
        self.encoded = 0  # image embeddings computed (the others came from the cache)

    def _autocast(self) -> Any:
        """``torch.autocast`` to the ``autocast`` option's dtype on this device, or a no-op."""
        # torch is heavy: imported on first use
        import torch

        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda" if str(self.device).startswith("cuda") else "cpu", dtype=self.autocast)

    def set_image(self, image: np.ndarray) -> None:
        """Put ``image``'s embedding in the predictor: from the cache when the same read-only array was encoded
        recently (:class:`~grand_engine.models.imaging.ImageCache`), else by running the image encoder."""
        cached = self.embeddings.get(image)
        if cached is not None:
            self.predictor.reset_image()
            p = self.predictor
            p.features, p.original_size, p.input_size = cached
            p.is_image_set = True
            return
        with self._autocast():
            self.predictor.set_image(check_image(image))
        self.encoded += 1
        p = self.predictor
        self.embeddings.put(image, (p.features, p.original_size, p.input_size))

    def _resolve(self) -> tuple[SamArch, Path]:
        """The architecture and the weights file for ``self.spec``."""
        options = self.spec.options
        raw = self.model_path
        if looks_local(raw):
            path = Path(raw)
            if path.is_dir():
                cfg = json.loads((path / CONFIG_FILE).read_text()) if (path / CONFIG_FILE).is_file() else {}
                if "model_type" in options:
                    cfg["model_type"] = options["model_type"]
                name = self.spec.file or cfg.get("weights")
                if not name:
                    raise ModelNotFoundError(f"SAM checkpoint dir {path} has no {CONFIG_FILE} and no `file:` is set")
                return arch_from_config(cfg), path / name
            return arch_from_config({"model_type": options.get("model_type", guess_model_type(path.name))}), path
        if not self.spec.file:
            raise ModelNotFoundError(f"SAM id {raw!r} is a Hub repository; set `file:` to the .pth inside it")
        weights = Path(
            hf_hub_download(raw, self.spec.file, revision=self.spec.revision, local_files_only=hub_offline())
        )
        model_type = options.get("model_type", guess_model_type(self.spec.file))
        return arch_from_config({"model_type": model_type}), weights

    @property
    def img_size(self) -> int:
        return int(self.model.image_encoder.img_size)

    def segment_boxes(
        self, image: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray, max_boxes_per_call: int = 64
    ) -> list[dict[str, Any]]:
        """One mask (COCO RLE) per xyxy box prompt; see :meth:`segment_boxes_with_scores`."""
        return self.segment_boxes_with_scores(image, boxes_xyxy, max_boxes_per_call)[0]

    def segment_boxes_with_scores(
        self, image: np.ndarray, boxes_xyxy: Sequence[Sequence[float]] | np.ndarray, max_boxes_per_call: int = 64
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Masks for xyxy box prompts (single-mask output) and SAM's predicted IoU per mask.

        The image is encoded once; boxes (clipped to the image) go through the decoder at most
        ``max_boxes_per_call`` at a time.
        """
        # torch is heavy: imported on first use
        import torch

        h, w = check_image(image).shape[:2]
        boxes = check_box_prompts(boxes_xyxy, h, w, max_boxes_per_call)
        if len(boxes) == 0:
            return [], np.zeros((0,), np.float32)
        self.set_image(image)
        masks_out: list[dict[str, Any]] = []
        scores_out: list[np.ndarray] = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(boxes), max_boxes_per_call):
                prompts = box_prompts(boxes[start : start + max_boxes_per_call], (h, w), self.img_size)
                masks, iou, _ = self.predictor.predict_torch(
                    point_coords=None,
                    point_labels=None,
                    boxes=torch.as_tensor(prompts, device=self.predictor.device),
                    multimask_output=False,
                )
                masks_out.extend(rle.encode(masks[:, 0].cpu().numpy()))
                scores_out.append(iou[:, 0].float().cpu().numpy())
        self.predictor.reset_image()
        return masks_out, np.concatenate(scores_out).astype(np.float32)

    def generate(
        self,
        image: np.ndarray,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        box_nms_thresh: float = 0.7,
        min_mask_region_area: int = 0,
        points_per_batch: int = 64,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Automatic masks (``SamAutomaticMaskGenerator``, segment-anything defaults) as
        ``{segmentation: RLE, bbox: xyxy float32, area, predicted_iou, stability_score}`` dicts."""
        # segment_anything is heavy: imported on first use
        from segment_anything import SamAutomaticMaskGenerator

        image = check_image(image)
        generator = SamAutomaticMaskGenerator(
            self.model,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
            min_mask_region_area=min_mask_region_area,
            output_mode="coco_rle",
            **kwargs,
        )
        records = generator.generate(image)
        out = []
        for rec in records:
            mask = rle.normalize(rec["segmentation"])
            out.append(
                {
                    "segmentation": mask,
                    # the project's box convention (x2 = last column + 1), not the generator's inclusive XYWH
                    "bbox": rle.to_bbox_xyxy(mask)[0],
                    "area": int(rec["area"]),
                    "predicted_iou": float(rec["predicted_iou"]),
                    "stability_score": float(rec["stability_score"]),
                }
            )
        return out
