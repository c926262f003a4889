"""``grand-engine stats``: per-image and per-dataset statistics of a run beside GranD's published figures.

The statistics (:mod:`grand_engine.quality.stats`) and the plots (:mod:`grand_engine.quality.stats_report`) are
imported only when the command runs. Layout of what it writes: ``docs/quality.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``grand-engine stats``."""
    p = sub.add_parser(
        "stats",
        help="per-image and per-dataset statistics of a run, beside GranD's published figures",
        description=(
            "Statistics of a run's done units: regions, floating objects, referring expressions, captions, "
            "grounded phrases, verification outcomes, labels, mask areas, depths and error rows. Prints a report, "
            "writes OUT/_stats/stats.json and PNG plots under OUT/_stats/ (docs/quality.md)."
        ),
    )
    p.add_argument("out", help="output folder of a run (or s3://bucket/prefix)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the statistics to FILE")
    p.add_argument("--html", default=None, metavar="DIR", help="also write a standalone page DIR/index.html + plots")
    p.add_argument(
        "--stage",
        default=None,
        help="annotation table to describe (default: the most complete of level4, level3, level2, link_phrases, "
        "level1 with a done unit)",
    )
    p.add_argument("--top-k", type=int, default=20, help="labels listed by name (default 20)")
    p.add_argument(
        "--mask-sample",
        type=int,
        default=20_000,
        metavar="IMAGES",
        help="decode the masks of about this many images for the mask-area distribution (default 20000; 0: all)",
    )
    p.add_argument(
        "--no-save", action="store_true", help="do not write OUT/_stats/ (e.g. an output you may only read)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Compute, print, and write the statistics; 2 when the output has nothing to describe."""
    # DuckDB, pyarrow's Parquet reader and matplotlib are loaded only when the command runs
    from grand_engine.io.store import OutputStore
    from grand_engine.quality.stats import StatsError, compute_stats, stats_json, write_stats
    from grand_engine.quality.stats_report import format_report, render_plots, write_html

    if args.top_k < 1:
        print("grand-engine: error: --top-k must be at least 1", file=sys.stderr)
        return 2
    store = OutputStore(args.out)
    try:
        sample = args.mask_sample if args.mask_sample > 0 else None
        stats = compute_stats(store, stage=args.stage, top_k=args.top_k, mask_sample_images=sample)
    except StatsError as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
    plots = render_plots(stats, stats.pop("_label_counts"))
    print(f"statistics of {store.uri}")
    print(format_report(stats))
    if not args.no_save:
        written = write_stats(store, stats, plots)
        print(f"wrote {store.full(written[-1])} and {len(plots)} plots in {store.full('_stats')}")
    if args.json:
        Path(args.json).write_text(stats_json(stats), encoding="utf-8")
        print(f"wrote {args.json}")
    if args.html:
        index = write_html(args.html, stats, plots)
        print(f"wrote {index}")
    return 0
