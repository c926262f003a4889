"""Segment Anything (family ``sam``) with the ``segment-anything`` package: box prompts and automatic masks.

Checkpoints are plain state dicts (``sam_vit_h_4b8939.pth`` …) loaded with ``torch.load(weights_only=True)``
into an architecture picked from :data:`SAM_VARIANTS` (``vit_h``, ``vit_l``, ``vit_b`` as Meta's
``sam_model_registry``, plus ``tiny`` for CI). ``spec.id`` may be:

* a ``.pth`` file (variant from ``options.model_type``, else guessed from the file name);
* a directory holding ``sam_config.json`` (``{"model_type": ..., "weights": ..., "build": {...}}``) and the
  weights, or the weights named by ``spec.file``;
* a Hub repository with ``spec.file`` naming the ``.pth`` inside it.

Masks are returned as COCO compressed RLE (``{"size": [H, W], "counts": str}``); boxes are xyxy pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.models.base import Adapter, ModelNotFoundError, hub_offline, looks_local, tiny_builder
from grand_engine.models.imaging import check_image, clip_boxes, seeded

CONFIG_FILE = "sam_config.json"


@dataclass(frozen=True)
class SamArch:
    """Build arguments of one SAM variant (the fields of segment-anything's ``_build_sam`` made explicit)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    prompt_embed_dim: int = 256
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


SAM_VARIANTS: dict[str, SamArch] = {
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArch(768, 12, 12, (2, 5, 8, 11)),
    # CI variant: 256-pixel input (the predictor and AMG read img_size from the encoder).
    "tiny": SamArch(
        32,
        2,
        2,
        (1,),
        img_size=256,
        prompt_embed_dim=32,
        window_size=14,
        mlp_ratio=2.0,
        decoder_mlp_dim=64,
        decoder_heads=2,
        iou_head_hidden_dim=32,
    ),
}


def build_sam(arch: SamArch) -> Any:
    """An untrained ``segment_anything.modeling.Sam`` of the given architecture, in eval mode."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed = arch.img_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.img_size,
            mlp_ratio=arch.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(arch.encoder_global_attn_indexes),
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embed, embed),
            input_image_size=(arch.img_size, arch.img_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _arch_from_config(cfg: dict[str, Any]) -> SamArch:
    if "build" in cfg:
        build = dict(cfg["build"])
        build["encoder_global_attn_indexes"] = tuple(build["encoder_global_attn_indexes"])
        return SamArch(**build)
    model_type = cfg.get("model_type", "vit_h")
    if model_type not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM model_type {model_type!r}; known: {', '.join(SAM_VARIANTS)}")
    return SAM_VARIANTS[model_type]


def _guess_model_type(name: str) -> str:
    for key in ("vit_h", "vit_l", "vit_b"):
        if key in name:
            return key
    return "vit_h"


def box_prompts(boxes_xyxy: np.ndarray, image_hw: tuple[int, int], img_size: int) -> np.ndarray:
    """The xyxy boxes in the model's input frame: the image is resized so its long side is ``img_size``
    (segment-anything's ``ResizeLongestSide``), x scaled by ``new_w / w`` and y by ``new_h / h``."""
    from segment_anything.utils.transforms import ResizeLongestSide

    h, w = image_hw
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(h, w, img_size)
    scale = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float64)
    return (np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) * scale).astype(np.float32)


class SamAdapter(Adapter):
    """segment-anything ``Sam`` with a ``SamPredictor`` for box prompts and the automatic mask generator."""

    family = "sam"

    def load(self) -> None:
        import torch
        from segment_anything import SamPredictor

        arch, weights = self._resolve()
        model = build_sam(arch)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model = model.to(self.device)
        self.arch = arch
        self.model = model.eval()
        self.predictor = SamPredictor(self.model)

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
                return _arch_from_config(cfg), path / name
            return _arch_from_config({"model_type": options.get("model_type", _guess_model_type(path.name))}), path
        if not self.spec.file:
            raise ModelNotFoundError(f"SAM id {raw!r} is a Hub repository; set `file:` to the .pth inside it")
        from huggingface_hub import hf_hub_download

        weights = Path(
            hf_hub_download(raw, self.spec.file, revision=self.spec.revision, local_files_only=hub_offline())
        )
        model_type = options.get("model_type", _guess_model_type(self.spec.file))
        return _arch_from_config({"model_type": model_type}), weights

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
        import torch

        from grand_engine.io import rle

        image = check_image(image)
        h, w = image.shape[:2]
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError("SAM box prompts must be finite numbers")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise ValueError("SAM box prompts must be xyxy with x2 >= x1 and y2 >= y1")
        if len(boxes) == 0:
            return [], np.zeros((0,), np.float32)
        if max_boxes_per_call < 1:
            raise ValueError(f"max_boxes_per_call must be at least 1, got {max_boxes_per_call}")
        boxes = clip_boxes(boxes, h, w)
        self.predictor.set_image(image)
        masks_out: list[dict[str, Any]] = []
        scores_out: list[np.ndarray] = []
        with torch.inference_mode():
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
        from segment_anything import SamAutomaticMaskGenerator

        from grand_engine.io import rle

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


# --- tiny checkpoints -------------------------------------------------------------------------------


@tiny_builder("sam-vit-tiny")
def build_tiny_sam(dest: Path) -> None:
    """SAM with a 2-block ViT encoder at 256² input: ``sam.pth`` state dict + ``sam_config.json``."""
    import torch

    with seeded(0):
        model = build_sam(SAM_VARIANTS["tiny"])
    torch.save(model.state_dict(), dest / "sam.pth")
    (dest / CONFIG_FILE).write_text(json.dumps({"model_type": "tiny", "weights": "sam.pth"}, indent=2) + "\n")
