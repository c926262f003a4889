"""A two-image GCG scene small enough to work out every figure by hand, written in GLaMM's layouts.

Both images are 10×10. ``sa_1`` has two objects: DOG (rows 0–3, columns 0–3, 16 px) and BALL (rows 6–9, columns
6–9, 16 px); ``sa_2`` has CHAIR (rows 2–5, columns 2–5, 16 px). The captions share only the word "a", so every
other n-gram has CIDEr weight log(2) and a caption predicted exactly scores CIDEr 10 (see the tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.io import rle

H = W = 10
CAPTION_1 = "a brown dog chases the red ball across green grass"
CAPTION_2 = "a wooden chair stands beside an open window"


def box(top: int, left: int, height: int = 4, width: int = 4, h: int = H, w: int = W) -> dict[str, Any]:
    """The RLE of a filled rectangle."""
    m = np.zeros((h, w), dtype=bool)
    m[top : top + height, left : left + width] = True
    return rle.encode(m)


DOG = box(0, 0)
BALL = box(6, 6)
CHAIR = box(2, 2)


def gt_images() -> list[dict[str, Any]]:
    return [
        {"id": "sa_1", "captions": [CAPTION_1], "labels": ["a brown dog", "the red ball"], "masks": [DOG, BALL]},
        {"id": "sa_2", "captions": [CAPTION_2], "labels": ["a wooden chair"], "masks": [CHAIR]},
    ]


def perfect() -> dict[str, dict[str, Any]]:
    """Predictions equal to the ground truth."""
    return {
        g["id"]: {"caption": g["captions"][0], "phrases": list(g["labels"]), "pred_masks": list(g["masks"])}
        for g in gt_images()
    }


def empty_prediction() -> dict[str, Any]:
    return {"caption": "", "phrases": [], "pred_masks": []}


def write_gt(folder: Path, images: list[dict[str, Any]], split: str = "val") -> Path:
    """``{split}_gcg_coco_mask_gt.json`` and ``{split}_gcg_coco_caption_gt.json`` as GLaMM distributes them."""
    folder.mkdir(parents=True, exist_ok=True)
    coco_images = [{"id": g["id"], "file_name": f"{g['id']}.jpg", "height": H, "width": W} for g in images]
    masks, captions = [], []
    for g in images:
        for m in g["masks"]:
            area = int(rle.area(m)[0])
            bbox = [float(v) for v in rle.to_bbox_xyxy(m)[0]]
            masks.append(
                {
                    "id": len(masks) + 1,
                    "image_id": g["id"],
                    "category_id": 1,
                    "segmentation": m,
                    "area": area,
                    "bbox": [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]],
                    "iscrowd": 0,
                }
            )
        for c in g["captions"]:
            captions.append({"id": len(captions) + 1, "image_id": g["id"], "caption": c, "labels": g["labels"]})
    categories = [{"id": 1, "name": "object"}]
    (folder / f"{split}_gcg_coco_mask_gt.json").write_text(
        json.dumps({"images": coco_images, "annotations": masks, "categories": categories})
    )
    (folder / f"{split}_gcg_coco_caption_gt.json").write_text(
        json.dumps({"images": coco_images, "annotations": captions})
    )
    return folder


def write_predictions(folder: Path, predictions: dict[str, Any], nested: bool = False) -> Path:
    """One ``<image_id>.json`` per prediction; ``nested`` puts the fields under the image id as one key."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, pred in predictions.items():
        body = {image_id: pred} if nested else {"image_id": image_id, **pred}
        (folder / f"{image_id}.json").write_text(json.dumps(body))
    return folder
