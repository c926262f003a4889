"""GCG figures with answers worked out by hand, and agreement with pycocotools and GLaMM's definitions.

The scene (``gcg_scene.py``): ``sa_1`` with DOG and BALL, ``sa_2`` with CHAIR, all 4×4 squares in 10×10 images.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from grand_engine.io import rle
from grand_engine.quality.gcg import (
    GCGImage,
    ap50,
    evaluate_gcg,
    image_miou,
    iou_matrix,
    miou_pairs,
    recall_matches,
)
from grand_engine.quality.gcg_inputs import (
    ground_truth_from_images,
    load_glamm_ground_truth,
    load_predictions,
)
from grand_engine.quality.text_similarity import cosine_matrix
from tests.quality import gcg_scene as S

# -- the greedy pairing and matching rules ---------------------------------------------------------------------


def test_miou_pairing_is_greedy_not_optimal():
    # pred × gt. Greedy takes 0.9 first, which leaves 0.1: mean 0.5 (the optimal assignment would give 0.825).
    m = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert miou_pairs(m) == [(0, 0), (1, 1)]
    assert image_miou(m) == pytest.approx(0.5)


def test_miou_pairing_ties_stops_at_zero_and_ignores_unpaired_masks():
    # Ties go to the first cell in row-major order; a zero IoU never pairs; extra masks do not lower the mean.
    m = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.0]])
    assert miou_pairs(m) == [(0, 0)]
    assert image_miou(m) == 0.5
    assert image_miou(np.zeros((0, 3))) == 0.0
    assert image_miou(np.zeros((2, 2))) == 0.0


def test_recall_stops_at_the_first_largest_iou_pair_that_fails():
    # gt × pred. The largest IoU (0, 0) fails the text test, so matching ends although (0, 1) and (1, 0)
    # would pass both tests: GLaMM's rule is greedy by IoU with an early stop.
    ious = np.array([[0.9, 0.6], [0.6, 0.8]])
    sims = np.array([[0.2, 0.9], [0.9, 0.9]])
    assert recall_matches(ious, sims) == []
    assert recall_matches(ious, np.full((2, 2), 0.9)) == [(0, 0), (1, 1)]
    # IoU exactly 0.5 and similarity exactly 0.5 pass (>=); just below does not.
    assert recall_matches(np.array([[0.5]]), np.array([[0.5]])) == [(0, 0)]
    assert recall_matches(np.array([[0.4999]]), np.array([[0.9]])) == []
    assert recall_matches(np.array([[0.9]]), np.array([[0.4999]])) == []


def test_recall_terminates_with_thresholds_at_zero():
    # GLaMM's loop never ends when both thresholds are <= 0 (zeroed cells keep passing); here every row and
    # column is used at most once.
    ious = np.array([[0.0, 0.0], [0.0, 0.0]])
    assert recall_matches(ious, np.zeros((2, 2)), iou_threshold=0.0, text_threshold=0.0) == [(0, 0), (1, 1)]


def _literal_miou(m: list[list[float]]) -> tuple[list[tuple[int, int]], float]:
    """GLaMM's mIoU pairing written out with Python loops over the remaining rows and columns."""
    rows, cols = list(range(len(m))), list(range(len(m[0]) if m else 0))
    pairs, values = [], []
    while rows and cols:
        best, where = None, None
        for i in rows:  # row-major scan, strictly greater: the first maximum wins
            for j in cols:
                if best is None or m[i][j] > best:
                    best, where = m[i][j], (i, j)
        if not best > 0:
            break
        pairs.append(where)
        values.append(best)
        rows.remove(where[0])
        cols.remove(where[1])
    return pairs, (sum(values) / len(values) if values else 0.0)


def _literal_recall(ious: list[list[float]], sims: list[list[float]]) -> list[tuple[int, int]]:
    """GLaMM's recall matching written out with loops: best remaining IoU, stop at the first failure."""
    rows, cols = list(range(len(ious))), list(range(len(ious[0]) if ious else 0))
    matches = []
    while rows and cols:
        best, where = None, None
        for i in rows:
            for j in cols:
                if best is None or ious[i][j] > best:
                    best, where = ious[i][j], (i, j)
        if best < 0.5 or sims[where[0]][where[1]] < 0.5:
            break
        matches.append(where)
        rows.remove(where[0])
        cols.remove(where[1])
    return matches


def test_pairing_and_matching_agree_with_loop_implementations_on_tied_matrices():
    rng = random.Random(7)
    levels = [0.0, 0.25, 0.5, 0.5, 0.75, 1.0]  # few distinct values: many ties
    for _ in range(400):
        p, g = rng.randint(0, 5), rng.randint(0, 5)
        m = [[rng.choice(levels) for _ in range(g)] for _ in range(p)]
        s = [[rng.choice(levels) for _ in range(g)] for _ in range(p)]
        arr = np.array(m, dtype=float).reshape(p, g)
        pairs, mean = _literal_miou(m)
        assert miou_pairs(arr) == pairs
        assert image_miou(arr) == pytest.approx(mean)
        assert recall_matches(arr, np.array(s, dtype=float).reshape(p, g)) == _literal_recall(m, s)


def test_iou_matrix_equals_decoded_intersection_over_union():
    rng = np.random.default_rng(3)
    a = rng.random((4, 12, 9)) > 0.6
    b = rng.random((3, 12, 9)) > 0.4
    got = iou_matrix(rle.encode(a), rle.encode(b))
    inter = np.array([[np.logical_and(x, y).sum() for y in b] for x in a])
    union = np.array([[np.logical_or(x, y).sum() for y in b] for x in a])
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, inter / union)
    assert iou_matrix([], rle.encode(b)).shape == (0, 3)


# -- the five figures on the hand-made scene ------------------------------------------------------------------


def _evaluate(tmp_path, predictions, encoder, meteor=False, missing="error"):
    gt = load_glamm_ground_truth(S.write_gt(tmp_path / "gt", S.gt_images()), "val")
    preds = load_predictions(S.write_predictions(tmp_path / "pred", predictions), gt, missing=missing)
    return evaluate_gcg(gt.images, preds.images, gt.coco, encoder=encoder, meteor=meteor)


def test_perfect_prediction(tmp_path, encoder, meteor):
    result = _evaluate(tmp_path, S.perfect(), encoder, meteor)
    # Every mask found at IoU 1; both captions exact. CIDEr-D: every n-gram but "a" occurs in one image only
    # (weight log 2), identical tf-idf vectors have cosine 1 for n = 1..4 and equal lengths no penalty: 10 × 1.
    # METEOR of identical captions (one chunk, nothing unmatched) is 1.
    assert result.figures() == pytest.approx({"AP50": 1.0, "METEOR": 1.0, "CIDEr": 10.0, "mIoU": 1.0, "recall": 1.0})
    assert (result.true_positives, result.gt_phrases) == (3, 3)


def test_empty_prediction(tmp_path, encoder, meteor):
    result = _evaluate(tmp_path, {"sa_1": S.empty_prediction(), "sa_2": S.empty_prediction()}, encoder, meteor)
    # No detection against 3 ground-truth masks: precision 0 at every recall threshold.
    assert result.figures() == {"AP50": 0.0, "METEOR": 0.0, "CIDEr": 0.0, "mIoU": 0.0, "recall": 0.0}


def test_one_image_perfect_one_empty(tmp_path, encoder):
    preds = S.perfect()
    preds["sa_2"] = S.empty_prediction()
    result = _evaluate(tmp_path, preds, encoder)
    # AP50: 2 true positives of 3 masks, precision 1 up to recall 2/3 → recall thresholds 0.00 … 0.66 (67 of
    # 101) have precision 1, the rest 0. mIoU (1 + 0) / 2; recall 2 of 3 phrases; CIDEr (10 + 0) / 2.
    assert result.ap50 == pytest.approx(67 / 101)
    assert result.miou == pytest.approx(0.5)
    assert result.recall == pytest.approx(2 / 3)
    assert result.cider == pytest.approx(5.0)
    assert result.meteor is None  # not requested
    assert result.per_image["sa_2"] == {"mIoU": 0.0, "recall_matches": 0, "gt_phrases": 1, "CIDEr": 0.0}


@pytest.mark.parametrize(
    ("shift", "ap", "miou", "recall"),
    [
        # CHAIR (columns 2–5) predicted at columns 3–6: intersection 12, union 20, IoU 0.6 ≥ 0.5.
        (1, 1.0, (1 + 0.6) / 2, 1.0),
        # at columns 4–7: intersection 8, union 24, IoU 1/3. AP50: detections of sa_1 (TP, TP) then sa_2 (FP),
        # precision 1 up to recall 2/3 → 67/101. mIoU still pairs it (IoU > 0); recall misses it.
        (2, 67 / 101, (1 + 1 / 3) / 2, 2 / 3),
    ],
)
def test_one_shifted_mask(tmp_path, encoder, shift, ap, miou, recall):
    preds = S.perfect()
    preds["sa_2"]["pred_masks"] = [S.box(2, 2 + shift)]
    result = _evaluate(tmp_path, preds, encoder)
    assert result.ap50 == pytest.approx(ap)
    assert result.miou == pytest.approx(miou)
    assert result.recall == pytest.approx(recall)
    assert result.cider == pytest.approx(10.0)


def test_synonym_and_unrelated_phrase(tmp_path, encoder):
    sims = cosine_matrix(encoder.embed(["a brown dog"]), encoder.embed(["a brown puppy", "a blue airplane"]))[0]
    assert sims[0] >= 0.5 > sims[1]  # the premise: a synonym is similar, an unrelated phrase is not
    preds = S.perfect()
    preds["sa_1"]["phrases"] = ["a brown puppy", "the red ball"]
    assert _evaluate(tmp_path / "synonym", preds, encoder).recall == pytest.approx(1.0)
    preds["sa_1"]["phrases"] = ["a brown dog", "a blue airplane"]
    result = _evaluate(tmp_path / "unrelated", preds, encoder)
    # The masks are perfect (AP50 and mIoU unchanged) but the ball's phrase names something else: 2 of 3.
    assert result.recall == pytest.approx(2 / 3)
    assert (result.ap50, result.miou) == pytest.approx((1.0, 1.0))
    # GLaMM's early stop: DOG and BALL both have IoU 1, the tie goes to DOG (first row); when DOG's phrase fails
    # the text test, matching of sa_1 ends there and BALL is not tried either: only CHAIR is recalled.
    preds["sa_1"]["phrases"] = ["a blue airplane", "the red ball"]
    assert _evaluate(tmp_path / "first", preds, encoder).recall == pytest.approx(1 / 3)


def test_missing_prediction_scored_as_empty_when_asked(tmp_path, encoder):
    preds = S.perfect()
    del preds["sa_2"]
    result = _evaluate(tmp_path, preds, encoder, missing="empty")
    assert result.ap50 == pytest.approx(67 / 101)
    assert result.recall == pytest.approx(2 / 3)


def test_pseudo_ground_truth_from_records_gives_the_same_figures(tmp_path, encoder):
    gt = load_glamm_ground_truth(S.write_gt(tmp_path / "gt", S.gt_images()), "val")
    pseudo = ground_truth_from_images(gt.images, "records")
    preds = S.perfect()
    preds["sa_2"]["pred_masks"] = [S.box(2, 3)]
    loaded = load_predictions(S.write_predictions(tmp_path / "pred", preds), gt)
    a = evaluate_gcg(gt.images, loaded.images, gt.coco, encoder=encoder, meteor=False)
    b = evaluate_gcg(pseudo.images, loaded.images, pseudo.coco, encoder=encoder, meteor=False)
    assert a.figures() == b.figures()


# -- AP50 against pycocotools used the way GLaMM's evaluator uses it -----------------------------------------------


def test_ap50_agrees_with_cocoeval_on_a_random_set(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(11)
    images, preds = [], {}
    for n in range(12):
        masks, pred_masks = [], []
        for _ in range(int(rng.integers(1, 5))):
            top, left = (int(v) for v in rng.integers(0, 6, size=2))
            masks.append(S.box(top, left))
            # shifted by 0–2 pixels, sometimes dropped, sometimes an extra false detection
            if rng.random() < 0.85:
                pred_masks.append(S.box(top + int(rng.integers(0, 3)), left + int(rng.integers(0, 3))))
        if rng.random() < 0.5:
            pred_masks.append(S.box(*(int(v) for v in rng.integers(0, 6, size=2))))
        labels = [f"thing {k}" for k in range(len(masks))]
        images.append({"id": f"im{n:02d}", "captions": ["a b c d"], "labels": labels, "masks": masks})
        preds[f"im{n:02d}"] = {"caption": "a b c d", "phrases": labels[: len(pred_masks)], "pred_masks": pred_masks}
    folder = S.write_gt(tmp_path / "gt", images)
    gt = load_glamm_ground_truth(folder, "val", allow_count_mismatch=True)
    loaded = load_predictions(S.write_predictions(tmp_path / "pred", preds), gt, allow_count_mismatch=True)
    ours = ap50(gt.coco, loaded.images, list(gt.images))

    # The reference: the mask file through COCO(), the detections through loadRes(), as GLaMM's script does.
    dets = [
        {"image_id": i, "category_id": 1, "segmentation": m, "score": 1.0}
        for i, p in preds.items()
        for m in p["pred_masks"]
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    coco_gt = COCO(str(folder / "val_gcg_coco_mask_gt.json"))
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "dets.json")), "segm")
    evaluator.params.catIds = [1]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert 0.0 < evaluator.stats[1] < 1.0  # a set where the figure is not trivial
    assert ours == evaluator.stats[1]


def test_no_mask_anywhere_leaves_ap50_undefined_and_a_single_image_has_cider_zero(encoder):
    image = GCGImage("x", ("a b c d",), (), ())
    gt = ground_truth_from_images({"x": image}, "records")
    result = evaluate_gcg(gt.images, {"x": image}, gt.coco, encoder=encoder, meteor=False)
    # COCOeval has nothing to score (-1); mIoU and recall have nothing to pair.
    assert result.ap50 is None and "AP50 is undefined" in result.notes[-1]
    assert (result.miou, result.recall) == (0.0, 0.0)
    # CIDEr-D weighs n-grams by log(images / document frequency): with one image every weight is 0.
    assert result.cider == 0.0


def test_the_worked_example_of_docs_quality(tmp_path, encoder):
    preds = {
        "sa_1": {
            "caption": "a brown dog chases a red ball on the grass",
            "phrases": ["a brown puppy", "a red ball"],
            "pred_masks": [S.DOG, S.box(6, 4)],  # the ball two columns left: IoU 8/24
        },
        "sa_2": {
            "caption": "a chair beside an open window",
            "phrases": ["a wooden chair"],
            "pred_masks": [S.box(2, 3)],
        },
    }
    result = _evaluate(tmp_path, preds, encoder)
    # docs/quality.md: AP50 (34 points at precision 1 + 33 at 2/3) / 101; mIoU ((1 + 1/3) / 2 + 0.6) / 2;
    # recall: dog and chair match, the ball (IoU 1/3) ends sa_1's matching.
    assert result.ap50 == pytest.approx(56 / 101)
    assert result.miou == pytest.approx((2 / 3 + 0.6) / 2)
    assert result.recall == pytest.approx(2 / 3)
