"""GLaMM's grounded conversation generation (GCG) figures: AP50, METEOR, CIDEr, mIoU and mask recall.

The definitions are those of GLaMM's evaluator (``eval/gcg/evaluate.py`` of mbzuai-oryx/groundingLMM, CVPR 2024),
reimplemented; ``docs/quality.md`` explains each figure. For one ground-truth image with masks ``G`` (aligned with
its phrases) and a prediction with masks ``P`` (aligned with its phrases):

* **AP50** — pycocotools ``COCOeval`` (``segm``, category 1, every prediction mask scored 1.0): average precision
  at mask IoU 0.5 (``stats[1]``) over the whole set.
* **METEOR**, **CIDEr** — of the predicted caption against the image's reference captions (:mod:`.captions`).
* **mIoU** — per image, predicted and ground-truth masks are paired greedily one to one: the pair with the largest
  IoU first (ties: first in row-major order of the ``P × G`` matrix), both removed, until no pair with IoU > 0 is
  left; the image's value is the mean IoU of its pairs (0 without any), and mIoU is the mean over images. Masks
  left unpaired do not lower it.
* **recall** — per image, on the ``G × P`` IoU matrix and the matching phrase-similarity matrix, the pair with the
  largest IoU (ties: first in row-major order) is taken while its IoU ≥ 0.5 *and* its phrase similarity ≥ 0.5; the
  first largest-IoU pair that fails either test ends the image's matching (a lower-IoU pair is not tried). Recall is
  matched pairs over ground-truth phrases, summed over the set.

Unlike GLaMM's script: annotations are indexed by image (it scans every annotation for every image), IoU matrices
come from pycocotools' RLE ``iou`` in one call per image (it decodes every mask and loops over pairs), each distinct
phrase is encoded once (it encodes both phrases again for every pair), nothing is swallowed (an exception during its
recall loop is printed and the image silently counts as zero matches), and malformed inputs are refused with the
file and the problem named (:mod:`.gcg_inputs`). The functions below take plain arrays and :class:`GCGImage` records
so that any two annotation sets can be compared, e.g. one run's output as pseudo ground truth for another.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grand_engine.io import rle
from grand_engine.quality import captions
from grand_engine.quality.captions import CaptionScores, MeteorScorer, caption_scores
from grand_engine.quality.text_similarity import TextEncoder, cosine_matrix

IOU_THRESHOLD = 0.5
"""Mask IoU a recall match needs (GLaMM ``evaluate_recall_with_mapping(iou_threshold=0.5)``)."""
TEXT_SIM_THRESHOLD = 0.5
"""Phrase similarity a recall match needs (GLaMM ``evaluate_recall_with_mapping(text_sim_threshold=0.5)``)."""
AP_CATEGORY = 1
"""The one category GLaMM's AP is computed on (``coco_eval.params.catIds = [1]``)."""
FIGURES = ("AP50", "METEOR", "CIDEr", "mIoU", "recall")


@dataclass(frozen=True)
class GCGImage:
    """One image's grounded caption: ground truth or prediction.

    ``masks[i]`` is the mask of ``phrases[i]`` (COCO RLE ``{"size": [H, W], "counts": str}``, all of one size).
    Ground truth has one or more reference ``captions``; a prediction has exactly one. Counts of phrases and masks
    may differ only for inputs loaded with ``allow_count_mismatch``: mask ``i`` without a phrase then never matches
    in recall, and a phrase without a mask never does either.
    """

    image_id: Hashable
    captions: tuple[str, ...]
    phrases: tuple[str, ...]
    masks: tuple[dict[str, Any], ...]
    height: int | None = None
    width: int | None = None
    file_name: str | None = None


# -- pairing and matching ---------------------------------------------------------------------------------------


def iou_matrix(masks_a: Sequence[Mapping[str, Any]], masks_b: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Mask IoU of every pair, ``(len(a), len(b))`` float64, computed on the RLEs (pycocotools, no decoding)."""
    return rle.iou_matrix(list(masks_a), list(masks_b))


def miou_pairs(iou_pred_gt: np.ndarray) -> list[tuple[int, int]]:
    """GLaMM's greedy one-to-one pairing on a ``P × G`` IoU matrix: ``[(pred, gt), …]`` in the order taken.

    Repeatedly takes the largest remaining IoU (the first in row-major order on ties) and removes its row and
    column, while the largest remaining IoU is above 0.
    """
    m = np.array(iou_pred_gt, dtype=np.float64, copy=True)
    pairs: list[tuple[int, int]] = []
    if m.ndim != 2:
        raise ValueError(f"expected a 2-d IoU matrix, got shape {m.shape}")
    for _ in range(min(m.shape)):
        flat = int(np.argmax(m))
        i, j = divmod(flat, m.shape[1])
        if not m[i, j] > 0:
            break
        pairs.append((i, j))
        m[i, :] = -np.inf
        m[:, j] = -np.inf
    return pairs


def image_miou(iou_pred_gt: np.ndarray) -> float:
    """Mean IoU of :func:`miou_pairs` (0.0 when nothing pairs)."""
    m = np.asarray(iou_pred_gt, dtype=np.float64)
    pairs = miou_pairs(m)
    return float(np.mean([m[i, j] for i, j in pairs])) if pairs else 0.0


def recall_matches(
    iou_gt_pred: np.ndarray,
    sim_gt_pred: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
    text_threshold: float = TEXT_SIM_THRESHOLD,
) -> list[tuple[int, int]]:
    """GLaMM's recall matching on ``G × P`` IoU and phrase-similarity matrices: ``[(gt, pred), …]``.

    Takes the pair with the largest remaining IoU (first in row-major order on ties); if its IoU is below
    ``iou_threshold`` or its similarity below ``text_threshold`` matching stops, else the pair is kept and its row
    and column are removed. A similarity of ``-inf`` marks a pair that can never match (a mask without a phrase).
    """
    ious = np.array(iou_gt_pred, dtype=np.float64, copy=True)
    sims = np.asarray(sim_gt_pred, dtype=np.float64)
    if ious.ndim != 2 or sims.shape != ious.shape:
        raise ValueError(f"IoU and similarity matrices must have one 2-d shape, got {ious.shape} and {sims.shape}")
    matches: list[tuple[int, int]] = []
    for _ in range(min(ious.shape)):
        i, j = divmod(int(np.argmax(ious)), ious.shape[1])
        if not (ious[i, j] >= iou_threshold and sims[i, j] >= text_threshold):
            break
        matches.append((i, j))
        ious[i, :] = -np.inf
        ious[:, j] = -np.inf
    return matches


def _candidate_rows_cols(iou_gt_pred: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns that hold a pair :func:`recall_matches` could test (IoU ≥ threshold)."""
    hit = iou_gt_pred >= iou_threshold
    return np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))


def phrase_similarities(
    gt: GCGImage,
    pred: GCGImage,
    iou_gt_pred: np.ndarray,
    vectors: Mapping[str, np.ndarray],
    iou_threshold: float = IOU_THRESHOLD,
) -> np.ndarray:
    """``G × P`` phrase similarities of mask pairs, filled where the IoU reaches ``iou_threshold`` (the only pairs
    :func:`recall_matches` consults) and ``-inf`` elsewhere and for masks without a phrase."""
    sims = np.full(iou_gt_pred.shape, -np.inf)
    rows, cols = _candidate_rows_cols(iou_gt_pred, iou_threshold)
    rows = rows[rows < len(gt.phrases)]
    cols = cols[cols < len(pred.phrases)]
    if rows.size and cols.size:
        a = np.stack([vectors[gt.phrases[i]] for i in rows])
        b = np.stack([vectors[pred.phrases[j]] for j in cols])
        sims[np.ix_(rows, cols)] = cosine_matrix(a, b)
    return sims


def phrases_to_encode(
    pairs: Sequence[tuple[GCGImage, GCGImage, np.ndarray]], iou_threshold: float = IOU_THRESHOLD
) -> list[str]:
    """The distinct phrases :func:`phrase_similarities` will need over ``(gt, pred, G × P IoU)`` triples."""
    needed: dict[str, None] = {}
    for gt, pred, ious in pairs:
        rows, cols = _candidate_rows_cols(ious, iou_threshold)
        if rows.size and cols.size:
            needed.update((gt.phrases[i], None) for i in rows if i < len(gt.phrases))
            needed.update((pred.phrases[j], None) for j in cols if j < len(pred.phrases))
    return list(needed)


# -- AP50 -------------------------------------------------------------------------------------------------------


def ap50(gt_coco: Mapping[str, Any], predictions: Mapping[Hashable, GCGImage], image_ids: Sequence[Hashable]) -> float:
    """AP at mask IoU 0.5 (COCOeval ``segm``, category 1, ``stats[1]``) of the predictions of ``image_ids``.

    ``gt_coco`` is a COCO instances dict (``images``, ``annotations`` with RLE ``segmentation``, ``iscrowd`` and
    ``area``). Every predicted mask becomes a detection of category 1 with score 1.0, in image order then mask
    order (the order decides between equal scores, as in GLaMM's evaluator). Returns -1.0 where COCOeval does
    (no ground-truth mask and no prediction of category 1 at all).
    """
    # pycocotools.coco imports matplotlib: deferred to the call
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections = []
    for image_id in image_ids:
        pred = predictions.get(image_id)
        masks = list(pred.masks) if pred is not None else []
        areas = rle.area(masks) if masks else []
        for mask, area in zip(masks, areas, strict=True):
            detections.append(
                {
                    "id": len(detections) + 1,
                    "image_id": image_id,
                    "category_id": AP_CATEGORY,
                    "segmentation": mask,
                    "area": float(area),
                    "score": 1.0,
                    "iscrowd": 0,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print progress
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": list(gt_coco.get("images", [])),
            "annotations": [dict(a) for a in gt_coco.get("annotations", [])],  # COCOeval writes 'ignore' into them
            "categories": list(gt_coco.get("categories", [])),
        }
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": coco_gt.dataset["images"],
            "annotations": detections,
            "categories": coco_gt.dataset["categories"],
        }
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "segm")
        evaluator.params.catIds = [AP_CATEGORY]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


# -- the whole evaluation ---------------------------------------------------------------------------------------


@dataclass
class GCGResult:
    """The five figures (METEOR None when not computed, AP50 None when COCOeval has nothing to score) and how."""

    ap50: float | None
    meteor: float | None
    cider: float
    miou: float
    recall: float
    images: int
    true_positives: int
    gt_phrases: int
    text_model: str
    tokenizer: str
    per_image: dict[Hashable, dict[str, float | int]]
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, float | None]:
        """``{"AP50", "METEOR", "CIDEr", "mIoU", "recall"}`` as computed (unrounded)."""
        return dict(zip(FIGURES, (self.ap50, self.meteor, self.cider, self.miou, self.recall), strict=True))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (figures rounded to 3 decimals as GLaMM prints them, and unrounded)."""
        return {
            "figures": {k: None if v is None else round(v, 3) for k, v in self.figures().items()},
            "figures_unrounded": self.figures(),
            "images": self.images,
            "recall_matches": self.true_positives,
            "gt_phrases": self.gt_phrases,
            "text_model": self.text_model,
            "tokenizer": self.tokenizer,
            "notes": list(self.notes),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "per_image": {str(k): v for k, v in self.per_image.items()},
        }


def _empty(image_id: Hashable) -> GCGImage:
    return GCGImage(image_id=image_id, captions=("",), phrases=(), masks=())


def evaluate_gcg(
    gt_images: Mapping[Hashable, GCGImage],
    predictions: Mapping[Hashable, GCGImage],
    gt_coco: Mapping[str, Any],
    encoder: TextEncoder | None = None,
    meteor: MeteorScorer | bool = True,
    iou_threshold: float = IOU_THRESHOLD,
    text_threshold: float = TEXT_SIM_THRESHOLD,
) -> GCGResult:
    """All five GCG figures of ``predictions`` against ``gt_images`` (in their order), and per-image values.

    An image without a prediction counts as an empty one (no caption, no mask). ``gt_coco`` is the ground truth as
    COCO instances for AP50 (see :func:`grand_engine.quality.gcg_inputs.coco_from_images` to build it from
    ``gt_images``). ``encoder``: the phrase encoder (default :meth:`TextEncoder.load`); ``meteor``: see
    :func:`grand_engine.quality.captions.caption_scores`.
    """
    ids = list(gt_images)
    if not ids:
        raise ValueError("the ground truth has no images")
    own_meteor = None
    if meteor is True and captions.java_path() is not None:
        # METEOR's java process spends seconds loading its paraphrase table: start it now, use it last.
        own_meteor = meteor = MeteorScorer()
    try:
        return _evaluate(gt_images, predictions, gt_coco, ids, encoder, meteor, iou_threshold, text_threshold)
    finally:
        if own_meteor is not None:
            own_meteor.close()


def _evaluate(
    gt_images: Mapping[Hashable, GCGImage],
    predictions: Mapping[Hashable, GCGImage],
    gt_coco: Mapping[str, Any],
    ids: list[Hashable],
    encoder: TextEncoder | None,
    meteor: MeteorScorer | bool,
    iou_threshold: float,
    text_threshold: float,
) -> GCGResult:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    preds = {i: predictions.get(i) or _empty(i) for i in ids}
    ious = {i: iou_matrix(gt_images[i].masks, preds[i].masks) for i in ids}
    per_image: dict[Hashable, dict[str, float | int]] = {i: {} for i in ids}
    for i in ids:
        per_image[i]["mIoU"] = image_miou(ious[i].T)  # GLaMM pairs on the pred × gt matrix
    miou = float(np.mean([per_image[i]["mIoU"] for i in ids]))
    seconds["masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    triples = [(gt_images[i], preds[i], ious[i]) for i in ids]
    needed = phrases_to_encode(triples, iou_threshold)
    if encoder is None:
        encoder = TextEncoder.load()
    vectors = dict(zip(needed, encoder.embed(needed), strict=True)) if needed else {}
    true_positives = gt_phrases = 0
    for gt, pred, iou in triples:
        sims = phrase_similarities(gt, pred, iou, vectors, iou_threshold)
        matched = len(recall_matches(iou, sims, iou_threshold, text_threshold))
        per_image[gt.image_id]["recall_matches"] = matched
        per_image[gt.image_id]["gt_phrases"] = len(gt.phrases)
        true_positives += matched
        gt_phrases += len(gt.phrases)
    recall = true_positives / gt_phrases if gt_phrases else 0.0
    seconds["recall"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ap = ap50(gt_coco, preds, ids)
    seconds["AP50"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    caption_result: CaptionScores = caption_scores(
        {i: gt_images[i].captions for i in ids}, {i: preds[i].captions[0] for i in ids}, meteor=meteor
    )
    for i in ids:
        per_image[i]["CIDEr"] = caption_result.cider_per_image[i]
    seconds["captions"] = time.perf_counter() - t0

    notes = list(caption_result.notes)
    if ap < 0:
        notes.append("AP50 is undefined: neither the ground truth nor the predictions have a mask of category 1")
    return GCGResult(
        ap50=None if ap < 0 else ap,
        meteor=caption_result.meteor,
        cider=caption_result.cider,
        miou=miou,
        recall=recall,
        images=len(ids),
        true_positives=true_positives,
        gt_phrases=gt_phrases,
        text_model=encoder.description,
        tokenizer=caption_result.tokenizer,
        per_image=per_image,
        notes=notes,
        seconds=seconds,
    )
