"""``grand-engine evaluate``: quality figures of annotations against a ground truth (see docs/quality.md).

``evaluate gcg`` computes GLaMM's grounded conversation generation figures. The evaluation code (pycocotools,
pycocoevalcap, transformers) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``grand-engine evaluate gcg`` on the ``grand-engine`` subcommand parsers."""
    p = sub.add_parser(
        "evaluate",
        help="score predictions against a ground truth (GCG: AP50, METEOR, CIDEr, mIoU, recall)",
        description="Quality figures of annotations against a ground truth (docs/quality.md).",
    )
    tasks = p.add_subparsers(dest="task", required=True)
    g = tasks.add_parser(
        "gcg",
        help="GLaMM's grounded conversation generation figures",
        description=(
            "GLaMM's five GCG figures (AP50, METEOR, CIDEr, mIoU, mask recall) of predictions against GranD-f "
            "ground truth in GLaMM's layout. Predictions: a folder of <image_id>.json in GLaMM's layout, a GranD-f "
            "export (grand-engine export OUT f.json --format grandf), or a run's output folder (its grandf table)."
        ),
    )
    g.add_argument("--gt", required=True, help="folder with {split}_gcg_coco_mask_gt.json and _caption_gt.json")
    g.add_argument(
        "--pred", required=True, help="prediction folder (GLaMM layout), GranD-f export file, or run output"
    )
    g.add_argument("--split", required=True, choices=("val", "test"), help="ground-truth split")
    g.add_argument(
        "--text-model",
        default=None,
        help="encoder for phrase similarity (local path or cached Hub id; default bert-base-uncased when cached, "
        "else the packaged all-MiniLM-L6-v2)",
    )
    g.add_argument("--json", default=None, metavar="OUT", help="also write the figures and per-image values here")
    g.add_argument(
        "--missing",
        choices=("error", "empty"),
        default="error",
        help="a ground-truth image without a prediction: refuse (default) or score it as an empty prediction",
    )
    g.add_argument(
        "--allow-count-mismatch",
        action="store_true",
        help="accept phrase and mask counts that differ (phrase i still goes with mask i; extras never match)",
    )
    g.add_argument("--device", default="cpu", help="device of the text encoder (default cpu)")
    g.set_defaults(func=run_gcg)
    return p


def run_gcg(args: argparse.Namespace) -> int:
    """Evaluate, print the five figures and how they were computed; 2 when an input is malformed or missing."""
    # the evaluation pulls in pycocotools, pycocoevalcap and transformers: imported only when the command runs
    from grand_engine.quality.captions import CaptionMetricError
    from grand_engine.quality.gcg import evaluate_gcg
    from grand_engine.quality.gcg_inputs import GCGInputError, load_glamm_ground_truth, load_predictions
    from grand_engine.quality.text_similarity import TextEncoder, TextModelError

    start = time.perf_counter()
    try:
        gt = load_glamm_ground_truth(args.gt, args.split, allow_count_mismatch=args.allow_count_mismatch)
        preds = load_predictions(args.pred, gt, missing=args.missing, allow_count_mismatch=args.allow_count_mismatch)
        encoder = TextEncoder.load(args.text_model, device=args.device)
    except (GCGInputError, TextModelError) as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
    print(f"ground truth: {gt.source} ({len(gt.images)} images, split {args.split})")
    print(f"predictions:  {preds.source} ({len(preds.images)} images)")
    print(f"text similarity encoder: {encoder.description}")
    try:
        result = evaluate_gcg(gt.images, preds.images, gt.coco, encoder=encoder)
    except CaptionMetricError as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 1
    print(f"caption tokenizer: {result.tokenizer}")
    for note in preds.notes() + result.notes:
        print(f"note: {note}")
    for name, value in result.figures().items():
        print(f"  {name:<7} {'n/a' if value is None else f'{value:.3f}'}")
    print(
        f"({result.true_positives} of {result.gt_phrases} ground-truth phrases recalled; {time.perf_counter() - start:.1f} s)"
    )
    if args.json:
        summary = {
            "split": args.split,
            "ground_truth": gt.source,
            "predictions": preds.source,
            "missing_predictions": [str(k) for k in preds.missing],
            **result.as_dict(),
        }
        summary["notes"] = preds.notes() + summary["notes"]
        Path(args.json).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
