"""``grand-engine compare``: the same images annotated two ways, compared stage by stage (docs/quality.md).

The comparison (:mod:`grand_engine.quality.compare`) and the phrase encoder are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``grand-engine compare``."""
    p = sub.add_parser(
        "compare",
        help="compare two outputs of the same images (two manifests, thresholds or model profiles)",
        description=(
            "Compare two runs' outputs of the same images, stage by stage: rows changed, boxes and masks matched "
            "(IoU), labels, captions (identical, similarity), grounded phrases, verification outcomes, and the "
            "GCG figures of B with A's grandf records as pseudo ground truth. Images in one output only are "
            "counted and listed."
        ),
    )
    p.add_argument("out_a", metavar="OUT_A", help="the reference output (folder or s3://bucket/prefix)")
    p.add_argument("out_b", metavar="OUT_B", help="the output compared with it")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    p.add_argument("--stages", default=None, help="comma-separated stages to compare (default: every stage in both)")
    p.add_argument(
        "--no-gcg", action="store_true", help="leave out the GCG figures (no METEOR, no encoder for recall)"
    )
    p.add_argument(
        "--no-text",
        action="store_true",
        help="do not load a text encoder: captions are compared for identity only (GCG recall loads its own)",
    )
    p.add_argument(
        "--text-model",
        default=None,
        help="encoder for caption similarity and GCG recall (default bert-base-uncased when cached, else the "
        "packaged all-MiniLM-L6-v2)",
    )
    p.add_argument("--device", default="cpu", help="device of the text encoder (default cpu)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Compare, print, optionally write JSON; 2 when an output cannot be read or compared."""
    # the comparison imports DuckDB, pycocotools, the caption scorers and transformers: only when it runs
    from grand_engine.quality.compare import CompareError, compare_runs
    from grand_engine.quality.compare_report import format_report
    from grand_engine.quality.stats import stats_json
    from grand_engine.quality.text_similarity import TextEncoder, TextModelError

    encoder = None
    if not args.no_text:
        try:
            encoder = TextEncoder.load(args.text_model, device=args.device)
        except TextModelError as exc:
            print(f"grand-engine: error: {exc}", file=sys.stderr)
            return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        result = compare_runs(args.out_a, args.out_b, encoder=encoder, gcg=not args.no_gcg, stages=stages)
    except CompareError as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(stats_json(result), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
